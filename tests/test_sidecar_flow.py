"""The one way through, without models: ring flags and flush markers, the supervisor's typed
events (latest face status, answer summaries, frame flushes), and feedback from the stored answer."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import numpy as np
import pytest

from pipeline import interview as iv
from pipeline.settings import Settings
from sidecar.protocol import (
    AnswerDone,
    AnswerSaved,
    CollectedFrame,
    FaceStatus,
    FramesFlushed,
    PartialWords,
    Ready,
    WorkerError,
    WorkerMetrics,
)
from sidecar.ring import COLLECT, FrameRing, RingFrame
from sidecar.supervisor import Sidecar
from sidecar.workers import FACE_STATUS_EVERY_S, _FaceStatuses
from tests.test_report import make_answer, make_frames


@pytest.fixture
def car():
    sidecar = Sidecar(Settings(ring_slots=8), store=False)  # not started: no worker, events fed by hand
    try:
        yield sidecar
    finally:
        sidecar.ring.close()
        sidecar.events.cancel_join_thread()
        sidecar.events.close()


def _image(v: int = 0) -> np.ndarray:
    return np.full((4, 6, 3), v, np.uint8)


def test_ring_carries_flags_and_a_flush_marker_behind_the_frames():
    ring = FrameRing(4, 8, 8)
    try:
        assert ring.put(_image(1), 10, "s", "a")
        assert ring.put(_image(2), 20, "s", "a", flags=COLLECT)
        assert ring.put_flush("s", "a", timeout=1.0)
        got = [ring.get(1.0) for _ in range(3)]
        assert [(f.t_ms, f.collect, f.flush_marker) for f in got] == [(10, False, False), (20, True, False),
                                                                     (0, False, True)]
        assert ring.stats()["frames_in"] == 2  # a marker is not a frame
        assert ring.get(0.0) is None
    finally:
        ring.close()


def test_flush_marker_waits_for_a_free_slot_instead_of_overwriting_a_frame():
    ring = FrameRing(2, 8, 8)
    try:
        ring.put(_image(1), 1, "s", "a")
        ring.put(_image(2), 2, "s", "a")
        assert not ring.put_flush("s", "a", timeout=0.05)  # full, and nobody reads: refused, nothing lost
        assert [ring.get(1.0).t_ms for _ in range(2)] == [1, 2]
        assert ring.stats()["dropped"] == 0
    finally:
        ring.close()


def test_face_status_is_sent_on_a_change_or_once_per_interval_not_per_frame():
    sent: list[Any] = []
    now = [100.0]
    faces = _FaceStatuses(type("Q", (), {"put": staticmethod(sent.append)})(), clock=lambda: now[0])
    ring_frame = RingFrame(5, 0, "s", "a", _image())
    faces.seen(ring_frame, {"face": True, "luma": 80.0})
    faces.seen(ring_frame, {"face": True, "luma": 81.0})  # same status, same instant: nothing sent
    assert len(sent) == 1 and isinstance(sent[0], FaceStatus) and sent[0].face and sent[0].luma == 80.0
    faces.seen(ring_frame, {"face": False, "luma": 81.0})  # face lost: at once
    assert len(sent) == 2 and not sent[1].face
    now[0] += FACE_STATUS_EVERY_S
    faces.seen(ring_frame, {"face": False, "luma": 30.0})  # interval passed: the latest luma
    assert len(sent) == 3 and sent[2].luma == 30.0
    assert faces.analysed("a") == 4 and faces.analysed("other") == 0


def test_supervisor_keeps_only_the_latest_face_status_per_session(car):
    car._handle(FaceStatus("s1", "a1", 1, True, 90.0))
    car._handle(FaceStatus("s2", "a2", 1, False, 20.0))
    car._handle(FaceStatus("s1", "a1", 2, False, 50.0))
    assert car.face_status("s1") == FaceStatus("s1", "a1", 2, False, 50.0)
    assert car.face_status("s2").luma == 20.0 and car.face_status("s3") is None
    assert not hasattr(car, "take_answer_frames") and not hasattr(car, "_answer_frames")


def test_supervisor_handles_every_typed_event(car):
    car._handle(Ready("speech", {"asr": {}}, 1.5))
    assert car.workers["speech"].state == "ready"
    assert car.workers["speech"].ready_timings == {"timings": {"asr": {}}, "total_s": 1.5}
    car._handle(WorkerMetrics("emotion", {"processed": 3, "journal_backlog": 2}))
    assert car.workers["emotion"].metrics == {"processed": 3, "journal_backlog": 2}
    car._handle(WorkerError("speech", "boom", answer_id="a"))
    assert car.workers["speech"].last_error == "boom"
    car._handle(PartialWords("a", [{"word": "hi", "start": 0.0, "end": 0.2}]))
    car._handle(PartialWords("a", [{"word": "there", "start": 0.3, "end": 0.5}]))
    assert [w["word"] for w in car.partial_words("a")] == ["hi", "there"]
    car._handle(AnswerDone({"answer_id": "a", "session_id": "s", "stored": False, "held": True,
                            "journal_full": True, "journal_error": "full", "transcript": "hi there"}))
    assert car.partial_words("a") == []
    assert car.result("a")["held"] and car.result("a")["transcript"] == "hi there"
    car._handle(AnswerSaved("a", "s", True))
    result = car.result("a")
    assert result["stored"] and not result["held"] and result["journal_error"] is None and not result["journal_full"]
    seen: list[Any] = []
    car.subscribe(seen.append)
    sample = CollectedFrame({"_id": "x", "answer_id": "a", "face": True})
    car._handle(sample)
    assert seen == [sample] and sample.answer_id == "a"


def test_wait_result_wakes_on_the_answer_summary(car):
    answer_id = uuid.uuid4().hex
    t = threading.Thread(target=car._handle,
                         args=(AnswerDone({"answer_id": answer_id, "session_id": "s", "stored": True}),))
    t.start()
    got = car.wait_result(answer_id, timeout=60)
    t.join()
    assert got is not None and got["stored"]
    assert car.wait_result("never", timeout=0.01) is None


def test_flush_frames_returns_once_every_earlier_frame_is_analysed(car):
    """The feedback waits on this: the marker is read after the answer's frames (FIFO)."""
    for k in range(3):
        assert car.push_frame(_image(k), 100 + k, "s", "a", block=True)
    read: list[int] = []

    def reader() -> None:  # the emotion worker's part
        while True:
            frame = car.ring.get(timeout=30)
            assert frame is not None
            if frame.flush_marker:
                car._handle(FramesFlushed(frame.answer_id, True, len(read)))
                return
            read.append(frame.t_ms)

    t = threading.Thread(target=reader)
    t.start()
    flushed = car.flush_frames("s", "a", timeout=60)
    t.join()
    assert flushed == FramesFlushed("a", True, 3) and read == [100, 101, 102]


def test_flush_frames_says_none_when_the_worker_never_answers(car):
    assert car.flush_frames("s", "a", timeout=0.05) is None


def test_device_advice_reads_the_face_status():
    stats = {"frames_seen": 10, "audio_seconds": 2.0}
    dark = iv.device_advice(stats, FaceStatus("s", "a", 1, False, 12.0), 0.2, 3.0)
    assert ("warn", "The picture is very dark: turn on a light facing you.") in dark
    assert any("No face found" in m for _, m in dark)
    assert ("ok", "Face found.") in iv.device_advice(stats, FaceStatus("s", "a", 1, True, 90.0), 0.2, 3.0)


def test_resume_opens_the_next_question_of_its_source_and_questions_come_back_whole():
    from pipeline.questions import Question

    q = Question("q1", "Why us?", "Because.", ("fit", "growth"), "behavioural", 60)
    live = {"source": "live", "questions": [q.to_dict(), q.to_dict()]}
    assert [iv.resume_step(live, i) for i in (0, 1, 2)] == ["device", "device", "summary"]
    assert iv.resume_step({**live, "source": "upload"}, 1) == "upload"
    assert iv.resume_step({"questions": [q.to_dict()]}, 0) == "device"  # older sessions have no source
    assert iv.session_questions(live["questions"]) == [q, q]


def test_feedback_reads_the_stored_answer_or_nothing(db):
    assert iv.stored_answer(db, "s-1", "a-1") is None  # not written yet: no made-up score
    db.answers.insert_one({"_id": "a-1", "session_id": "s-1", "index": 0, "question": "q", "status": "recording"})
    assert iv.stored_answer(db, "s-1", "a-1") is None  # only its start is stored
    db.answers.replace_one({"_id": "a-1"}, make_answer("a-1"))
    db.frames.insert_many(make_frames())
    found = iv.stored_answer(db, "s-1", "a-1")
    assert found is not None
    answer, frames = found
    assert answer["_id"] == "a-1" and answer["grade"] == make_answer("a-1")["grade"]
    assert [f["t"] for f in frames] == [f["t"] for f in make_frames()]
    assert iv.stored_answer(db, "s-2", "a-1") is None  # another session's id finds nothing


def test_wait_ready_wakes_when_both_workers_are_ready_or_one_failed(car):
    assert not car.wait_ready(timeout=0.01)
    t = threading.Thread(target=lambda: [car._handle(Ready(n, {}, 0.1)) for n in car.workers])
    t.start()
    assert car.wait_ready(timeout=60)
    t.join()
    car.workers["speech"].state = "failed"
    assert not car.wait_ready(timeout=60)  # returns at once: a failed worker is not coming
