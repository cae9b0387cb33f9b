"""The batched writer against a real Mongo-protocol server, with real faults injected."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pymongo
import pytest

from pipeline.schemas import InvalidDocumentError
from pipeline.storage import EmbeddedServer, free_port
from pipeline.writer import BatchedWriter, JournalFullError, WriterOptions
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]


def _frame(i: int, session: str = "s1") -> dict:
    return {"_id": f"{session}-{i}", "session_id": session, "answer_id": "a1", "t": 1_700_000_000_000 + i, "face": False}


def _writer(db: pymongo.database.Database, journal: Path, **kw) -> BatchedWriter:
    opts = WriterOptions(journal_dir=journal, flush_seconds=kw.pop("flush_seconds", 0.2), **kw)
    return BatchedWriter(lambda: db, opts)


def test_inserts_and_updates_arrive_once(db, tmp_path):
    w = _writer(db, tmp_path / "j")
    for i in range(250):
        w.insert("frames", _frame(i))
    sid = w.insert("sessions", {"candidate": "Ann", "started_at": datetime.now(UTC)})
    w.update("sessions", sid, {"status": "complete", "settings.frame_sample_every": 4})
    assert w.flush(20)
    assert db.frames.count_documents({}) == 250
    s = db.sessions.find_one({"_id": sid})
    assert s["status"] == "complete" and s["settings"] == {"frame_sample_every": 4}
    w.update("sessions", sid, {"grade": 0.7})
    assert w.flush(20)
    assert db.sessions.find_one({"_id": sid})["grade"] == 0.7
    st = w.status()
    assert st.pending_ops == 0 and st.flushed_ops == 253 and st.connected
    w.close()
    assert not list((tmp_path / "j" / "app").glob("seg-*"))


def test_bad_document_is_refused_whole(db, tmp_path):
    w = _writer(db, tmp_path / "j")
    with pytest.raises(InvalidDocumentError, match="emotion probabilities"):
        w.insert("frames", {**_frame(1), "face": True, "emotions": {"happy": 1.5}})
    with pytest.raises(InvalidDocumentError, match="candidate"):
        w.insert("sessions", {"started_at": datetime.now(UTC)})
    with pytest.raises(InvalidDocumentError, match="status"):
        w.update("answers", "x", {"status": "nonsense"})
    assert w.status().pending_ops == 0
    assert w.flush(5)
    assert db.frames.count_documents({}) == 0
    w.close()


def test_journal_is_bounded(db, tmp_path):
    w = _writer(db, tmp_path / "j", journal_max_bytes=2048, flush_seconds=60)
    with pytest.raises(JournalFullError, match="journal is full"):
        for i in range(100):
            w.insert("frames", _frame(i))
    w.close()


def test_database_down_at_start_then_up(tmp_path):
    port = free_port()
    server = EmbeddedServer(tmp_path / "db", port=port)
    uri = server.uri  # the credentials exist before the server does
    client: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=300)
    w = BatchedWriter(lambda: client.t, WriterOptions(journal_dir=tmp_path / "j", flush_seconds=0.2, retry_max_seconds=0.5))
    for i in range(500):
        w.insert("frames", _frame(i))  # acknowledged into the journal though nothing listens
    # The first flush attempt has to time out first.
    wait_until(lambda: w.status().connected is not None, "the first flush attempt to fail", 60)
    st = w.status()
    assert st.connected is False and st.last_error and st.pending_ops == 500
    server.start()
    try:
        assert w.flush(30)
        assert client.t.frames.count_documents({}) == 500
        w.close()
    finally:
        server.stop()


@pytest.mark.slow
def test_server_killed_during_10000_writes(tmp_path):
    """SIGKILL the database mid-stream, restart it: all 10,000 are there exactly once."""
    port = free_port()
    store = tmp_path / "db"
    server = EmbeddedServer(store, port=port).start()
    client: pymongo.MongoClient = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=500)
    db = client.stream
    w = BatchedWriter(
        lambda: db,
        WriterOptions(journal_dir=tmp_path / "j", flush_seconds=0.1, max_docs=400, retry_max_seconds=0.5),
    )
    written, server_dead = threading.Event(), threading.Event()
    produced = 0

    def produce() -> None:
        nonlocal produced
        for i in range(10_000):
            if i == 6_000:
                server_dead.wait(300)  # the last 4,000 are written while the server is down
            w.insert("frames", _frame(i))
            produced = i + 1
            if i % 500 == 0:
                time.sleep(0.02)  # a stream, not one burst
        written.set()

    producer = threading.Thread(target=produce)
    producer.start()
    wait_until(lambda: db.frames.estimated_document_count() >= 2000, "2,000 frames in the database", 120)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    server_dead.set()
    # Writes keep coming while the server is dead, and the writer has found it dead.
    wait_until(lambda: produced >= 8_000 and w.status().connected is False,
               "writes journaled while the server is dead", 120)
    server = EmbeddedServer(store, port=port).start()
    try:
        producer.join(120)
        assert written.is_set()
        assert w.flush(120)
        total = db.frames.count_documents({})
        distinct = len(db.frames.distinct("_id"))
        print(f"\n10,000 writes with a SIGKILLed server: {total} documents, {distinct} distinct")
        assert total == 10_000 and distinct == 10_000
        w.close()
    finally:
        server.stop()


CHILD = r"""
import sys, threading
sys.path.insert(0, sys.argv[1])
import pymongo
from pathlib import Path
from pymongo.collection import Collection
from pipeline.writer import BatchedWriter, WriterOptions

# Fault injection: once the database has accepted two segments, say so and hold the flusher
# before it deletes the second one; the test SIGKILLs this process exactly there.
real_bulk_write, sent = Collection.bulk_write, 0

def bulk_write(self, requests, *args, **kwargs):
    global sent
    result = real_bulk_write(self, requests, *args, **kwargs)
    sent += len(requests)
    if sent >= 2000:
        print(f"WROTE {sent}", flush=True)
        threading.Event().wait()
    return result

Collection.bulk_write = bulk_write
db = pymongo.MongoClient(sys.argv[2]).killed
w = BatchedWriter(lambda: db, WriterOptions(journal_dir=Path(sys.argv[3]), flush_seconds=3600, max_docs=10**9))
for i in range(5000):
    w.insert("frames", {"_id": f"k-{i}", "session_id": "s", "answer_id": "a", "t": i, "face": False})
    if i % 1000 == 999:
        w.flush(0)  # close a segment of exactly 1,000 and hand it to the flusher; do not wait
print("ACKED", flush=True)
w.flush(None)
print("FLUSHED", flush=True)
"""


@pytest.mark.slow
def test_writer_process_killed_mid_flush_replays_exactly_once(mongo_uri, tmp_path):
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=3000)
    client.drop_database("killed")
    journal = tmp_path / "j"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ROOT), mongo_uri, str(journal)], stdout=subprocess.PIPE, text=True
    )
    # Kill once all 5,000 are acknowledged and the flush is part-way: the database holds what the
    # child reports written, and the journal still holds that last segment as unsent.
    lines = {child.stdout.readline().strip() for _ in range(2)}
    wrote = next((line for line in lines if line.startswith("WROTE ")), None)
    assert "ACKED" in lines and wrote, lines
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    before = client.killed.frames.count_documents({})
    assert before == int(wrote.split()[1]) < 5000
    assert list(journal.glob("*/seg-*.jsonl")), "the killed writer left its journal"
    w = BatchedWriter(lambda: client.killed, WriterOptions(journal_dir=journal, name="replayer", flush_seconds=0.1))
    assert w.flush(60)
    w.close()
    total = client.killed.frames.count_documents({})
    print(f"\nkilled mid-flush with {before} of 5000 written; after replay {total}")
    assert total == 5000 and len(client.killed.frames.distinct("_id")) == 5000
    client.drop_database("killed")


def test_torn_journal_line_is_ignored(db, tmp_path):
    journal = tmp_path / "j" / "dead"
    journal.mkdir(parents=True)
    good = json.dumps({"op": "insert", "c": "frames", "d": _frame(1)})
    (journal / "seg-000000000001.jsonl").write_text(good + "\n" + good[:20])
    w = _writer(db, tmp_path / "j")
    assert w.flush(20)
    assert db.frames.count_documents({}) == 1
    w.close()


def test_two_live_writers_get_separate_journals(db, tmp_path):
    a = _writer(db, tmp_path / "j")
    b = _writer(db, tmp_path / "j")
    ids = [a.insert("frames", _frame(i, "a")) for i in range(50)]
    ids += [b.insert("frames", _frame(i, "b")) for i in range(50)]
    assert a.flush(20) and b.flush(20)
    assert db.frames.count_documents({"_id": {"$in": ids}}) == 100
    a.close()
    b.close()


def test_unique_ids_from_writer(db, tmp_path):
    w = _writer(db, tmp_path / "j")
    ids = {w.insert("answers", {"session_id": "s", "index": i, "question": "Q?"}) for i in range(20)}
    assert len(ids) == 20 and all(len(i) == 32 for i in ids)
    assert w.flush(20)
    assert db.answers.count_documents({}) == 20
    w.close()
    assert uuid.UUID(next(iter(ids)))
