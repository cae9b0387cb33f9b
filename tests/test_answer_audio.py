"""An open answer's audio stored while it is recorded (pipeline/answer_audio.py) and the node that
finishes an answer whose node died (sidecar/recovery.py): real writer, real SecantusDB, real workers."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pymongo
import pytest

from pipeline import answer_audio
from pipeline.media import load_audio
from pipeline.records import SAMPLE_RATE, AnswerStart
from pipeline.schemas import InvalidDocumentError, validate
from pipeline.settings import Settings
from pipeline.storage import ensure_indexes
from pipeline.writer import BatchedWriter, WriterOptions
from sidecar.recovery import OrphanSweeper
from sidecar.supervisor import Sidecar
from tests.waiting import wait_until


def _start(t0_ms: int = 1_700_000_000_000) -> AnswerStart:
    return AnswerStart(uuid.uuid4().hex, uuid.uuid4().hex, 0, "Quote a famous speech.",
                       "Ask what you can do for your country.", ("ask what you can do for your country",),
                       t0_ms, ("Americans",))


def _spool_audio(spool: answer_audio.AudioSpool, start: AnswerStart, audio: np.ndarray) -> None:
    spool.start(start)
    i, sizes = 0, (320, 8000, 4410, 16000 * 3)  # 20 ms callbacks, 0.5 s, odd sizes, one larger than a chunk
    n = 0
    while i < len(audio):
        step = sizes[n % len(sizes)]
        spool.add(start.answer_id, start.started_ms + i * 1000 // SAMPLE_RATE, audio[i:i + step])
        i, n = i + step, n + 1


@pytest.fixture
def writer(db, tmp_path):
    ensure_indexes(db)
    w = BatchedWriter(lambda: db, WriterOptions(journal_dir=tmp_path / "journal", flush_seconds=0.2))
    yield w
    w.close()


def test_spooled_audio_comes_back_on_its_clock(db, writer, shared_data):
    audio = load_audio(shared_data / "speech" / "jfk.flac")
    start = _start()
    spool = answer_audio.AudioSpool(writer.insert, node="node-a")
    _spool_audio(spool, start, audio)
    spool.end(start.answer_id, start.started_ms + 11_000, "incomplete")
    assert writer.flush(30)
    chunks = list(db.answer_audio.find({"answer_id": start.answer_id, "kind": "audio"}))
    assert len(chunks) == -(-len(audio) // int(answer_audio.CHUNK_SECONDS * SAMPLE_RATE))
    assert all(c["session_id"] == start.session_id and c["node"] == "node-a" for c in chunks)
    stored = answer_audio.load(db, start.answer_id)
    assert stored is not None and stored.start == start
    assert stored.t_ms == start.started_ms and (stored.ended_ms, stored.status) == (start.started_ms + 11_000,
                                                                                  "incomplete")
    assert len(stored.audio) == len(audio)
    assert np.max(np.abs(stored.audio - np.clip(audio, -1, 1))) < 1.0 / 16000  # 16-bit PCM


def test_a_lost_chunk_becomes_silence_so_the_clock_holds(db, writer):
    start = _start()
    spool = answer_audio.AudioSpool(writer.insert, node="node-a")
    tone = (0.3 * np.sin(np.arange(SAMPLE_RATE * 6) / 5.0)).astype(np.float32)
    _spool_audio(spool, start, tone)
    spool.end(start.answer_id, start.started_ms + 6000, "complete")
    assert writer.flush(30)
    db.answer_audio.delete_one({"_id": f"{start.answer_id}:000001"})  # the writer never sent this one
    stored = answer_audio.load(db, start.answer_id)
    assert stored is not None and len(stored.audio) == len(tone)
    chunk = int(answer_audio.CHUNK_SECONDS * SAMPLE_RATE)
    assert not stored.audio[chunk:2 * chunk].any() and stored.audio[2 * chunk:].any()
    assert stored.status == "complete"


def test_schema_caps_a_chunk_and_refuses_unknown_kinds():
    base = {"_id": "a:000000", "answer_id": "a", "session_id": "s", "node": "n", "written_at": datetime.now(UTC)}
    validate("answer_audio", {**base, "kind": "audio", "pcm": b"\0" * 64000})
    with pytest.raises(InvalidDocumentError, match="pcm"):
        validate("answer_audio", {**base, "kind": "audio", "pcm": b"\0" * (4 * 16000 * 2 + 2)})
    with pytest.raises(InvalidDocumentError, match="kind"):
        validate("answer_audio", {**base, "kind": "video"})


def test_only_stale_unstored_unclaimed_answers_are_orphans_and_one_node_wins(db, writer):
    now = datetime.now(UTC)
    old = answer_audio.AudioSpool(writer.insert, node="dead", clock=lambda: now - timedelta(seconds=60))
    fresh = answer_audio.AudioSpool(writer.insert, node="alive", clock=lambda: now)
    tone = np.full(SAMPLE_RATE * 3, 0.1, np.float32)
    orphan, live, stored = _start(), _start(), _start()
    for spool, start in ((old, orphan), (fresh, live), (old, stored)):
        _spool_audio(spool, start, tone)
    assert writer.flush(30)
    db.answers.insert_one({"_id": stored.answer_id, "session_id": stored.session_id, "status": "complete"})
    # the speech worker writes the answer as "recording" when it starts: its node may have died after that
    db.answers.insert_one({"_id": orphan.answer_id, "session_id": orphan.session_id, "status": "recording"})
    found = answer_audio.orphaned_answers(db, stale_seconds=30, now=now)
    assert orphan.answer_id in found and live.answer_id not in found and stored.answer_id not in found
    wins: list[bool] = []
    racers = [threading.Thread(target=lambda n=n: wins.append(answer_audio.claim(db, orphan.answer_id, f"n{n}")))
              for n in range(4)]
    for t in racers:
        t.start()
    for t in racers:
        t.join()
    assert sorted(wins) == [False, False, False, True]
    assert orphan.answer_id not in answer_audio.orphaned_answers(db, stale_seconds=30, now=now)


@pytest.mark.slow
def test_another_node_finishes_an_answer_whose_node_died(mongo_uri, tmp_path, shared_data):
    """Node A spools half of a spoken answer and dies (nothing ended it); node B's sweeper claims the
    orphan, transcribes and grades the stored audio and stores the answer as incomplete."""
    settings = Settings(MONGODB_URI=mongo_uri, db_name=f"recover_{uuid.uuid4().hex[:8]}", data_dir=tmp_path / "b",
                        flush_seconds=0.5)
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_uri)
    db = client[settings.storage.db_name]
    ensure_indexes(db)
    dead = BatchedWriter(lambda: db, WriterOptions(journal_dir=tmp_path / "a" / "journal", flush_seconds=0.2))
    audio = load_audio(shared_data / "speech" / "jfk.flac")
    start = _start(t0_ms=int(datetime.now(UTC).timestamp() * 1000))
    _spool_audio(answer_audio.AudioSpool(dead.insert, node="node-a"), start, audio[: 6 * SAMPLE_RATE])
    assert dead.flush(30)
    dead.close()  # node A is gone: no end, no answer document

    car = Sidecar(settings, store=True).start()
    try:
        assert car.wait_ready(240), car.status()
        sweeper = OrphanSweeper(lambda: db, car, node="node-b", stale_seconds=0.0, interval=3600)
        assert sweeper.sweep_once() == [start.answer_id]
        assert sweeper.sweep_once() == [], "claimed once: a second sweep leaves it alone"
        answer = wait_until(lambda: db.answers.find_one({"_id": start.answer_id, "status": "incomplete"}),
                            "the recovered answer stored", 180)
        text = " ".join(answer["transcript"].lower().split())
        assert "fellow americans" in text and "ask not" in text, answer["transcript"]
        assert answer["session_id"] == start.session_id and answer["capture"]["recovered"] is True
        assert answer["capture"]["audio_seconds"] == pytest.approx(6.0, abs=0.01)
        assert all(start.started_ms <= w["t_ms"] <= start.started_ms + 6500 for w in answer["words"])
        print(f"\nrecovered on node-b from node-a's stored audio: {answer['transcript']!r}")
    finally:
        car.stop()
        client.drop_database(settings.storage.db_name)
        client.close()


def test_the_supervisor_spools_live_answers_but_not_recovered_ones(db, writer):
    """Sidecar.spool gets a live answer's start, audio and end; an answer fed from stored audio
    (recovery) is not stored a second time. Workers are not started: their inboxes only collect."""
    import queue

    car = Sidecar(Settings(ring_slots=8, speech_workers=1), store=False)
    try:
        for w in car.workers.values():
            w.inbox = queue.Queue()
        car.spool = answer_audio.AudioSpool(writer.insert, node="node-a")
        live, recovered = _start(), _start()
        car.start_answer(live)
        car.start_answer(recovered, spool=False)
        tone = np.full(SAMPLE_RATE * 3, 0.2, np.float32)
        for start in (live, recovered):
            for i in range(0, len(tone), 8000):
                car.push_audio(start.answer_id, start.started_ms + i // 16, tone[i:i + 8000])
            car.end_answer(start.answer_id, start.started_ms + 3000, status="incomplete")
        assert writer.flush(30)
        kinds = sorted(d["kind"] for d in db.answer_audio.find({"answer_id": live.answer_id}))
        assert kinds == ["audio", "audio", "end", "start"]
        assert db.answer_audio.count_documents({"answer_id": recovered.answer_id}) == 0
        stored = answer_audio.load(db, live.answer_id)
        assert stored is not None and len(stored.audio) == len(tone) and stored.status == "incomplete"
    finally:
        car.ring.close()
        car.events.cancel_join_thread()
        car.events.close()


def test_audio_expires_after_the_recovery_window_unless_the_candidate_consented(db, writer, shared_data):
    from dataclasses import replace

    audio = load_audio(shared_data / "speech" / "hotwords.mp3")
    t = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    spool = answer_audio.AudioSpool(writer.insert, node="node-a", clock=lambda: t)
    plain, kept = _start(), replace(_start(), keep_audio=True)
    for start in (plain, kept):
        _spool_audio(spool, start, audio)
        spool.end(start.answer_id, start.started_ms + 4_000, "complete")
    assert writer.flush(30)
    day = timedelta(seconds=answer_audio.AUDIO_KEEP_SECONDS)
    expiry = {d["expires_at"] for d in db.answer_audio.find({"answer_id": plain.answer_id})}
    assert expiry == {t + day}
    assert {d["expires_at"] for d in db.answer_audio.find({"answer_id": kept.answer_id})} == {None}
    assert db.answer_audio.index_information()["expires_at"]["expireAfterSeconds"] == 0
    # kept audio of a finished answer is outside the recovery window: never an orphan, never scanned
    assert answer_audio.orphaned_answers(db, 30, now=t + 2 * day) == []


def test_older_audio_gets_its_day_when_the_expiry_index_changes(db):
    t = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    db.answer_audio.create_index([("written_at", pymongo.ASCENDING)], name="expires",
                                 expireAfterSeconds=answer_audio.AUDIO_KEEP_SECONDS)
    db.answer_audio.insert_one({"_id": "a:start", "kind": "start", "answer_id": "a", "session_id": "s",
                                "node": "n", "written_at": t})
    ensure_indexes(db)
    info = db.answer_audio.index_information()
    assert "expires" not in info and "expires_at" in info
    doc = db.answer_audio.find_one({"_id": "a:start"})
    assert doc["expires_at"].replace(tzinfo=UTC) == t + timedelta(seconds=answer_audio.AUDIO_KEEP_SECONDS)
