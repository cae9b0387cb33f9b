"""The pool of speech workers: how many, fair and sticky assignment, each worker's own inbox and restart,
and (real workers, real models) concurrent answers on different workers and a crash that touches one answer."""

from __future__ import annotations

import os
import queue
import re
import signal
import time
import uuid
from typing import Any

import numpy as np
import pymongo
import pytest

from pipeline.media import load_audio
from pipeline.records import SAMPLE_RATE
from pipeline.settings import Settings
from sidecar.protocol import AnswerDone, AnswerEnd, AnswerStart, AudioChunk, Ready
from sidecar.speech_pool import (
    OpenAnswer,
    choose_worker,
    pool_load,
    reassign,
    replay,
    speech_worker_count,
    speech_worker_names,
)
from sidecar.supervisor import Sidecar
from tests.waiting import wait_until


def _start(answer_id: str | None = None) -> AnswerStart:
    return AnswerStart(uuid.uuid4().hex, answer_id or uuid.uuid4().hex, 0, "Quote a famous speech.",
                       "Ask what you can do for your country.", ("ask what you can do for your country",),
                       int(time.time() * 1000))


def _open(worker: str, seconds: float = 0.0) -> OpenAnswer:
    a = OpenAnswer(_start(), worker=worker)
    a.samples = int(seconds * SAMPLE_RATE)
    return a


# ---------------------------------------------------------------------- sizing and fairness (no processes)
def test_pool_size_is_the_setting_or_cores_minus_one_capped():
    assert speech_worker_count(3, cores=2) == 3  # an explicit setting wins, even past the cores
    assert [speech_worker_count(0, cores=c) for c in (1, 2, 3, 5, 9, 64)] == [1, 1, 2, 4, 8, 8]
    assert speech_worker_count(0) >= 1
    assert speech_worker_names(3) == ["speech", "speech-1", "speech-2"]
    assert Settings(speech_workers=4).sidecar.speech_workers == 4
    with pytest.raises(ValueError):
        Settings(speech_workers=-1)


def test_new_answer_goes_to_the_worker_with_fewest_open_answers_then_least_audio():
    names = speech_worker_names(3)
    ready = dict.fromkeys(names, "ready")
    assert choose_worker(names, [], ready) == "speech"  # all idle: pool order
    answers = [_open("speech", 30), _open("speech-1", 5)]
    assert choose_worker(names, answers, ready) == "speech-2"  # the one with none open
    answers.append(_open("speech-2", 20))
    assert choose_worker(names, answers, ready) == "speech-1"  # one each: the least queued audio
    answers += [_open("speech-1", 1), _open("speech-1", 1)]
    assert choose_worker(names, answers, ready) == "speech-2"  # speech-1 has 3 open now, the others 1
    assert pool_load(names, answers)["speech-1"] == {"open_answers": 3, "queued_audio_s": 7.0}
    # A warming or restarting worker only gets answers when no ready one is left; a failed one last.
    assert choose_worker(names, [], {"speech": "restarting", "speech-1": "ready", "speech-2": "ready"}) == "speech-1"
    assert choose_worker(names, answers, {"speech": "failed", "speech-1": "warming", "speech-2": "failed"}) == "speech-1"


def test_a_worker_failed_for_good_hands_its_answers_to_the_others_fairly():
    names = speech_worker_names(3)
    states = {"speech": "failed", "speech-1": "ready", "speech-2": "ready"}
    answers = [_open("speech", 3), _open("speech", 2), _open("speech-1", 9), _open("speech-2", 1)]
    moved = reassign("speech", names, answers, states)
    assert moved == answers[:2]  # only the failed worker's answers move
    assert [a.worker for a in answers] == ["speech-2", "speech-1", "speech-1", "speech-2"]  # two each now
    assert reassign("speech", names[:1], [_open("speech")], {"speech": "failed"}) == []  # nobody left to take it


def test_replay_puts_start_audio_and_end_in_order():
    a, b = _open("speech"), _open("speech")
    a.chunks = [AudioChunk(a.start.answer_id, i, np.zeros(4, np.float32)) for i in (0, 1)]
    a.end = AnswerEnd(a.start.answer_id, 2)
    b.chunks = [AudioChunk(b.start.answer_id, 5, np.zeros(4, np.float32))]
    inbox: queue.Queue[Any] = queue.Queue()
    assert replay(inbox, [a, b]) == 3
    got = [inbox.get_nowait() for _ in range(inbox.qsize())]
    assert [type(m).__name__ for m in got] == ["AnswerStart", "AudioChunk", "AudioChunk", "AnswerEnd",
                                               "AnswerStart", "AudioChunk"]
    assert [m.t_ms for m in got if isinstance(m, AudioChunk)] == [0, 1, 5]


@pytest.fixture
def pool_car():
    sidecar = Sidecar(Settings(speech_workers=3, ring_slots=8), store=False)  # not started: inboxes by hand
    for name in sidecar.speech_names:
        sidecar.workers[name].inbox = queue.Queue()
    try:
        yield sidecar
    finally:
        sidecar.ring.close()
        sidecar.events.cancel_join_thread()
        sidecar.events.close()


def _inbox(car: Sidecar, name: str) -> list[Any]:
    q = car.workers[name].inbox
    return [q.get_nowait() for _ in range(q.qsize())]


def test_answers_are_sticky_and_spread_over_the_pool(pool_car):
    car = pool_car
    assert list(car.workers) == ["emotion", "speech", "speech-1", "speech-2"]
    for name in car.speech_names:
        car._handle(Ready(name, {}, 0.1))
    assert not car.ready  # the emotion worker is not ready: the node is not
    starts = [_start() for _ in range(4)]
    for s in starts[:3]:
        car.start_answer(s)
    owners = [car.speech_worker_of(s.answer_id) for s in starts[:3]]
    assert owners == ["speech", "speech-1", "speech-2"]  # one each
    car.push_audio(starts[1].answer_id, 0, np.zeros(16000, np.float32))
    car.start_answer(starts[3])  # one open each: speech-1 has queued audio, so speech or speech-2 ...
    assert car.speech_worker_of(starts[3].answer_id) == "speech"  # ... and the pool order breaks that tie
    car.push_audio(starts[3].answer_id, 0, np.zeros(8000, np.float32))
    car.end_answer(starts[3].answer_id, 500)
    # Every message of an answer went to its own worker's inbox, none to another's.
    got = {n: _inbox(car, n) for n in car.speech_names}
    assert [type(m).__name__ for m in got["speech"]] == ["AnswerStart", "AnswerStart", "AudioChunk", "AnswerEnd"]
    assert {m.answer_id for m in got["speech"]} == {starts[0].answer_id, starts[3].answer_id}
    assert [type(m).__name__ for m in got["speech-1"]] == ["AnswerStart", "AudioChunk"]
    assert {m.answer_id for m in got["speech-2"]} == {starts[2].answer_id}
    status = car.status()
    assert status["speech_workers"] == 3
    assert [status["workers"][n]["open_answers"] for n in car.speech_names] == [2, 1, 1]
    assert status["workers"]["speech-1"]["queued_audio_s"] == 1.0
    # speech-2's answer is stored: its audio goes, and the next answer goes to the idle worker.
    car._handle(AnswerDone({"answer_id": starts[2].answer_id, "stored": True}, worker="speech-2"))
    assert car.speech_worker_of(starts[2].answer_id) is None
    nxt = _start()
    car.start_answer(nxt)
    assert car.speech_worker_of(nxt.answer_id) == "speech-2"
    car.start_answer(starts[1])  # the same answer started again stays where its state is
    assert car.speech_worker_of(starts[1].answer_id) == "speech-1"


def test_events_of_each_speech_worker_update_that_worker(pool_car):
    car = pool_car
    car._handle(Ready("speech-2", {"asr": {}}, 2.5))
    assert car.workers["speech-2"].state == "ready" and car.workers["speech-2"].ready_timings["total_s"] == 2.5
    assert car.workers["speech"].state == "stopped" and car.workers["speech-1"].state == "stopped"


# ---------------------------------------------------------------------- real workers, real models
def _words(result: dict[str, Any]) -> list[str]:
    return [re.sub(r"[^a-z']+", "", w["word"].lower()) for w in result["words"]]


@pytest.fixture(scope="module")
def pool_env(mongo_uri, tmp_path_factory, shared_data):
    data = tmp_path_factory.mktemp("pool")
    settings = Settings(MONGODB_URI=mongo_uri, db_name=f"pool_{uuid.uuid4().hex[:8]}", data_dir=data,
                        heartbeat_timeout_seconds=3.0, flush_seconds=0.5, speech_workers=2)
    car = Sidecar(settings, store=True).start()
    assert car.wait_ready(400), car.status()
    client = pymongo.MongoClient(mongo_uri)
    speech = shared_data / "speech"
    audio = {"jfk": load_audio(speech / "jfk.flac"), "left": load_audio(speech / "stereo_diarization.wav", channel=0)}
    # Each answer fed alone first: what the concurrent and the crashed runs must give word for word.
    alone = {name: _run(car, [(name, a)])[name] for name, a in audio.items()}
    yield car, client[settings.storage.db_name], audio, alone
    car.stop()
    client.drop_database(settings.storage.db_name)


def _feed(car: Sidecar, answer_id: str, audio: np.ndarray, t0_ms: int, start: int, stop: int) -> None:
    for i in range(start, stop, 8000):
        car.push_audio(answer_id, t0_ms + i * 1000 // SAMPLE_RATE, audio[i:min(i + 8000, stop)])


def _run(car: Sidecar, answers: list[tuple[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """Start every answer, feed them interleaved chunk by chunk (at the same time), end them, wait for all."""
    starts = {name: _start() for name, _ in answers}
    for s in starts.values():
        car.start_answer(s)
    longest = max(len(a) for _, a in answers)
    for i in range(0, longest, 8000):
        for name, a in answers:
            if i < len(a):
                _feed(car, starts[name].answer_id, a, starts[name].started_ms, i, min(i + 8000, len(a)))
    for name, a in answers:
        car.end_answer(starts[name].answer_id, starts[name].started_ms + len(a) * 1000 // SAMPLE_RATE)
    out = {}
    for name, s in starts.items():
        result = car.wait_result(s.answer_id, 240)
        assert result is not None and result["stored"], (name, car.status())
        out[name] = dict(result)
    return out


@pytest.mark.slow
def test_pool_warms_every_worker_and_reports_each(pool_env):
    car, _, _, _ = pool_env
    status = car.status()
    assert status["ready"] and status["speech_workers"] == 2
    for name in ("speech", "speech-1"):
        w = status["workers"][name]
        assert w["alive"] and w["state"] == "ready" and w["warm_up"]["total_s"] > 0 and w["rss_mb"] > 0
        print(f"\n{name}: warm-up {w['warm_up']['total_s']:.1f}s, RSS {w['rss_mb']:.0f} MB")
    assert status["workers"]["speech"]["pid"] != status["workers"]["speech-1"]["pid"]


@pytest.mark.slow
def test_two_concurrent_answers_run_on_two_workers_with_the_words_of_alone(pool_env):
    car, db, audio, alone = pool_env
    starts = {name: _start() for name in audio}
    for s in starts.values():
        car.start_answer(s)
    owners = {name: car.speech_worker_of(s.answer_id) for name, s in starts.items()}
    assert sorted(owners.values()) == ["speech", "speech-1"], owners  # one answer on each worker
    for i in range(0, max(len(a) for a in audio.values()), 8000):
        for name, a in audio.items():
            if i < len(a):
                _feed(car, starts[name].answer_id, a, starts[name].started_ms, i, min(i + 8000, len(a)))
    for name, a in audio.items():
        car.end_answer(starts[name].answer_id, starts[name].started_ms + len(a) * 1000 // SAMPLE_RATE)
    for name, s in starts.items():
        result = car.wait_result(s.answer_id, 240)
        assert result is not None and result["stored"], car.status()
        assert _words(result) == _words(alone[name]), (name, result["transcript"], alone[name]["transcript"])
        assert db.answers.count_documents({"_id": s.answer_id, "status": "complete"}) == 1
    assert "what you can do for your country" in " ".join(_words(alone["jfk"]))
    assert "against the wizard who had vanished" in " ".join(_words(alone["left"]))  # tiny.en drops "confused"


@pytest.mark.slow
def test_killing_one_worker_mid_answer_replays_only_its_answer(pool_env):
    car, db, audio, alone = pool_env
    starts = {name: _start() for name in audio}
    for s in starts.values():
        car.start_answer(s)
    owners = {name: car.speech_worker_of(s.answer_id) for name, s in starts.items()}
    assert sorted(owners.values()) == ["speech", "speech-1"], owners
    victim, other = owners["jfk"], owners["left"]
    before = {n: (car.workers[n].restarts, car.workers[n].process.pid) for n in (victim, other)}
    halves = {name: len(a) // 2 for name, a in audio.items()}
    for name, a in audio.items():
        _feed(car, starts[name].answer_id, a, starts[name].started_ms, 0, halves[name])
    # The victim has taken the first half off its inbox: what it held dies with it and must be replayed.
    wait_until(lambda: car.status()["workers"][victim]["inbox_depth"] == 0, "the victim to take its first half", 120)
    os.kill(car.workers[victim].process.pid, signal.SIGKILL)  # fault injection: the worker dies mid-answer
    for name, a in audio.items():
        _feed(car, starts[name].answer_id, a, starts[name].started_ms, halves[name], len(a))
        car.end_answer(starts[name].answer_id, starts[name].started_ms + len(a) * 1000 // SAMPLE_RATE)
    wait_until(lambda: car.workers[victim].restarts != before[victim][0], f"{victim} to be restarted", 120)
    results = {name: car.wait_result(s.answer_id, 300) for name, s in starts.items()}
    assert all(r is not None and r["stored"] for r in results.values()), car.status()
    for name, r in results.items():  # nothing lost: word for word what each answer gave alone
        assert r is not None and _words(r) == _words(alone[name]), (name, r and r["transcript"])
        assert db.answers.count_documents({"_id": starts[name].answer_id}) == 1
    assert car.workers[victim].restarts == before[victim][0] + 1
    assert (car.workers[other].restarts, car.workers[other].process.pid) == before[other]  # untouched
    assert car.wait_ready(240)


def test_wait_ready_waits_for_every_worker_of_the_pool(pool_car):
    car = pool_car
    for name in ("emotion", "speech", "speech-2"):
        car._handle(Ready(name, {}, 0.1))
    assert not car.wait_ready(timeout=0.01) and not car.status()["ready"]  # speech-1 is still warming
    car._handle(Ready("speech-1", {}, 0.1))
    assert car.wait_ready(timeout=60)
    car.workers["speech-1"].state = "failed"
    assert not car.wait_ready(timeout=60)  # returns at once: a failed worker is not coming
