"""Issue 10, item 1 (write path): deletes and re-scores go through the journaled writer, and a
delete is never undone by a replay, against a real SecantusDB with real outages."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pymongo

from pipeline.export import delete_session
from pipeline.storage import DELETED_SESSIONS, EmbeddedServer, ensure_indexes, free_port
from pipeline.writer import BatchedWriter, WriterOptions, apply_session_delete

NOW = datetime(2025, 11, 1, 9, 0, tzinfo=UTC)


def _writer(get_db: Callable[[], pymongo.database.Database], journal: Path, name: str = "app",
            **kw: float) -> BatchedWriter:
    opts = WriterOptions(journal_dir=journal, name=name, flush_seconds=kw.pop("flush_seconds", 0.2),
                         retry_max_seconds=0.5, **kw)
    return BatchedWriter(get_db, opts)


def _journal_session(w: BatchedWriter, sid: str, answers: int = 3, frames: int = 20) -> None:
    w.insert("sessions", {"_id": sid, "candidate": "Ann", "started_at": NOW})
    for k in range(answers):
        w.insert("answers", {"_id": f"{sid}-a{k}", "session_id": sid, "index": k, "question": "Why?"})
        w.update("answers", f"{sid}-a{k}", {"status": "complete", "transcript": "because"})
    for i in range(frames):
        w.insert("frames", {"_id": f"{sid}-f{i}", "session_id": sid, "answer_id": f"{sid}-a0",
                            "t": 1_700_000_000_000 + i, "face": False})
    w.update("answer_scores", f"{sid}-a0", {"session_id": sid, "grade": {"score": 0.5}}, upsert=True)
    w.update("sessions", sid, {"status": "complete", "grade": 0.5})


def _everything_of(db: pymongo.database.Database, sid: str) -> dict[str, int]:
    found = {name: db[name].count_documents({"session_id": sid}) for name in db.list_collection_names()}
    found["sessions"] = db.sessions.count_documents({"_id": sid})
    return {k: n for k, n in found.items() if n}


def _kill(server: EmbeddedServer) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(30)


def test_delete_while_journaled_and_database_down_leaves_nothing(tmp_path):
    """The acceptance test: delete a session while its writes are still in the journal and the
    database is down; bring the database back; no document of that session exists."""
    server = EmbeddedServer(tmp_path / "db", port=free_port()).start()
    client: pymongo.MongoClient = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=300)
    db = client.app
    w = _writer(lambda: db, tmp_path / "j")
    try:
        _journal_session(w, "s-gone", answers=1, frames=5)  # some of it reached the database
        _journal_session(w, "s-kept")
        assert w.flush(30) and db.answers.count_documents({"session_id": "s-gone"}) == 1
        _kill(server)

        # More of it arrives while the database is down, then the coach deletes it.
        w.update("answers", "s-gone-a0", {"transcript": "later"})
        for k in range(1, 4):
            w.insert("answers", {"_id": f"s-gone-a{k}", "session_id": "s-gone", "index": k, "question": "Why?"})
        w.insert("frames", {"_id": "s-gone-late", "session_id": "s-gone", "answer_id": "s-gone-a1",
                            "t": 1_700_000_000_999, "face": False})
        w.update("answer_scores", "s-gone-a1", {"session_id": "s-gone", "grade": {"score": 0.9}}, upsert=True)
        assert delete_session(db, "s-gone", w, timeout=1.0) is None  # journaled, not done yet
        w.insert("frames", {"_id": "s-kept-late", "session_id": "s-kept", "answer_id": "s-kept-a0",
                            "t": 1_700_000_000_999, "face": False})
        assert w.status().pending_ops >= 8 and w.status().connected is False

        server.start()  # back, on the same port and data folder
        assert w.flush(30)
        assert _everything_of(db, "s-gone") == {}
        assert db[DELETED_SESSIONS].find_one({"_id": "s-gone"}) is not None
        counts = w.deleted("s-gone")
        assert counts is not None and counts["sessions"] == 1 and counts["answers"] == 1 and counts["frames"] == 5
        # The other session is whole, including what was journaled after the delete.
        assert _everything_of(db, "s-kept") == {"answers": 3, "frames": 21, "answer_scores": 1, "sessions": 1}
    finally:
        w.close(flush_timeout=2)
        client.close()
        server.stop()


def test_delete_after_inserts_in_one_segment_wins_and_later_writes_are_dropped(db, tmp_path):
    ensure_indexes(db)
    w = _writer(lambda: db, tmp_path / "j", flush_seconds=3600)  # one segment until flush() rotates it
    try:
        _journal_session(w, "s1")
        w.delete_session("s1")
        assert w.flush(30)
        assert _everything_of(db, "s1") == {}
        assert w.deleted("s1") == {"shares": 0, "frames": 0, "answers": 0, "sessions": 0}  # nothing had arrived
        # A later segment with writes for it (a late worker result, a re-score): dropped, not resurrected.
        _journal_session(w, "s1")
        assert w.flush(30)
        assert _everything_of(db, "s1") == {}
        assert w.status().dropped_ops == 2 * (1 + 3 * 2 + 20 + 2) - 2 * 3  # plain answer $sets are not counted
    finally:
        w.close()


def test_orphaned_journal_of_a_dead_writer_adopted_after_the_delete_writes_nothing(tmp_path):
    server = EmbeddedServer(tmp_path / "db", port=free_port()).start()
    client: pymongo.MongoClient = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=300)
    db = client.app
    app = _writer(lambda: db, tmp_path / "j", name="app")
    try:
        app.insert("sessions", {"_id": "s1", "candidate": "Ann", "started_at": NOW})
        app.insert("answers", {"_id": "s1-a0", "session_id": "s1", "index": 0, "question": "Why?"})
        assert app.flush(30)
        # The speech worker's writer journals its results while the database is away, then dies.
        _kill(server)
        worker = _writer(lambda: db, tmp_path / "j", name="speech")
        for k in range(1, 4):
            worker.insert("answers", {"_id": f"s1-a{k}", "session_id": "s1", "index": k, "question": "Why?"})
        worker.update("answers", "s1-a0", {"status": "complete", "transcript": "because"})
        worker.update("answer_scores", "s1-a0", {"session_id": "s1", "grade": {"score": 0.4}}, upsert=True)
        worker.update("sessions", "s1", {"status": "analysed"})
        worker.insert("answers", {"_id": "s2-a0", "session_id": "s2", "index": 0, "question": "Why?"})
        worker.close(flush_timeout=2)  # its folder lock is free: an orphaned journal
        assert list((tmp_path / "j" / "speech").glob("seg-*.jsonl"))

        server.start()
        assert delete_session(db, "s1", app) is not None
        assert _everything_of(db, "s1") == {}

        # A writer started later adopts the dead worker's journal and replays it.
        later = _writer(lambda: db, tmp_path / "j", name="app")  # "app" is held: it takes "app-1"
        try:
            assert later.status().pending_ops == 7
            assert later.flush(30)
            assert _everything_of(db, "s1") == {}
            assert db.answers.find_one({"_id": "s2-a0"}) is not None  # the rest of the orphan arrived
            assert later.status().dropped_ops == 5  # a plain $set of a deleted answer is not counted
        finally:
            later.close()
    finally:
        app.close(flush_timeout=2)
        client.close()
        server.stop()


class _DeleteBeforeAnswers:
    """Fault injection: another process deletes the session between this writer's tombstone check
    and its bulk write of answers (the real database underneath, only the timing is forced)."""

    def __init__(self, db: pymongo.database.Database, session_id: str) -> None:
        self._db, self._sid, self.fired = db, session_id, False

    def __getitem__(self, name: str) -> object:
        coll = self._db[name]
        if name != "answers" or self.fired:
            return coll
        outer = self

        class _Racing:
            def bulk_write(self, ops: list, **kw: object) -> object:
                outer.fired = True
                assert apply_session_delete(outer._db, outer._sid)["sessions"] == 1  # what the other writer sends
                return coll.bulk_write(ops, **kw)

        return _Racing()

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


def test_a_write_racing_a_delete_from_another_process_is_taken_out_again(db, tmp_path):
    ensure_indexes(db)
    db.sessions.insert_one({"_id": "s1", "candidate": "Ann", "started_at": NOW})
    racing = _DeleteBeforeAnswers(db, "s1")
    worker = _writer(lambda: racing, tmp_path / "j", name="speech", flush_seconds=3600)  # type: ignore[arg-type, return-value]
    try:
        worker.insert("answers", {"_id": "s1-a0", "session_id": "s1", "index": 0, "question": "Why?"})
        worker.insert("answers", {"_id": "s2-a0", "session_id": "s2", "index": 0, "question": "Why?"})
        assert worker.flush(30)
        assert racing.fired  # the delete ran after the check and before the write
        assert _everything_of(db, "s1") == {}  # the check after the write took it out again
        assert db.answers.find_one({"_id": "s2-a0"}) is not None
    finally:
        worker.close()
