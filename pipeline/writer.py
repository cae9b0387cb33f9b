"""Batched, journaled writes to MongoDB.

``insert``/``update`` validate the document, append it to an on-disk journal
segment and return: from then on it is acknowledged and will reach the database
exactly once, whatever happens to the database or to this process.

A background thread rotates the segment every ``flush_seconds`` (or when it holds
``max_docs`` operations) and sends it as one ``bulk_write(ordered=False)`` per
collection. A segment file is deleted only after the database accepted it; on any
error it stays and is retried with exponential back-off. After a crash the next
writer replays leftover segments, its own and any other dead writer's. Replays are
idempotent: inserts carry their ``_id`` (a duplicate-key error means "already
there") and updates are ``$set``.

Deleting a session goes through the journal too (``delete_session``), so it is ordered
with the writes before it. When its segment is sent, a tombstone (``deleted_sessions``)
is stored first, then everything of the session is deleted. From then on any journaled
write for that session (an insert, an upsert, a session update) is dropped when its
segment is sent, whenever and by whichever writer: a later segment of this writer, or a
dead writer's journal adopted afterwards. A segment whose writes raced a delete by
another process is checked again after it was sent, and what it wrote for a session
deleted meanwhile is deleted: a delete can never be undone by a replay.

A record is journaled whole or not at all: short writes are continued, and on any
write error (disk full, I/O error) the segment is cut back to where the record began
and the caller gets a ``JournalError``: that write was NOT acknowledged. A line that
cannot be read back (torn by a crash, corrupted) is set aside into
``quarantine.jsonl`` and counted, and the rest of its segment is sent: one bad line
never holds up the queue.

The journal's files and record format are in ``pipeline.journal``; what a sent segment does in
MongoDB (coalescing, tombstones, session deletes) is in ``pipeline.journal_send``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from pymongo.errors import PyMongoError

from pipeline import journal
from pipeline.journal import (
    JournalError,
    JournalFullError,
    JournalRecord,
    JournalWriteError,
    human_bytes,
)
from pipeline.journal_send import DUPLICATE_KEY, apply_session_delete, send_segment, store_tombstones
from pipeline.schemas import validate, validate_fields
from pipeline.settings import Settings, StorageSettings
from pipeline.storage import FILE_MODE, Db

# Importers (pages, sidecar, export, tests) take these from here.
__all__ = [
    "DUPLICATE_KEY", "BatchedWriter", "JournalError", "JournalFullError", "JournalWriteError", "Update",
    "WriterOptions", "WriterStatus", "apply_session_delete", "human_bytes", "store_tombstones",
]

log = logging.getLogger(__name__)


class Update(NamedTuple):
    """One ``$set`` for ``BatchedWriter.update_many``."""

    collection: str
    doc_id: str
    fields: dict[str, Any]
    upsert: bool = False


_DEFAULT = StorageSettings()  # the defaults are written once, in the settings


@dataclass(frozen=True)
class WriterOptions:
    journal_dir: Path
    flush_seconds: float = _DEFAULT.flush_seconds
    max_docs: int = _DEFAULT.flush_max_docs
    journal_max_bytes: int = _DEFAULT.journal_max_bytes
    retry_max_seconds: float = _DEFAULT.retry_max_seconds
    name: str = "app"

    @classmethod
    def from_settings(cls, settings: Settings, name: str = "app") -> WriterOptions:
        return cls(
            journal_dir=settings.storage.data_dir / "journal",
            flush_seconds=settings.storage.flush_seconds,
            max_docs=settings.storage.flush_max_docs,
            journal_max_bytes=settings.storage.journal_max_bytes,
            retry_max_seconds=settings.storage.retry_max_seconds,
            name=name,
        )


@dataclass
class WriterStatus:
    pending_ops: int = 0
    journal_bytes: int = 0
    flushed_ops: int = 0
    rejected_ops: int = 0
    last_flush: float | None = None
    last_error: str | None = None
    connected: bool | None = None
    segments: int = 0
    journal_full: bool = False  # the last write was refused for lack of space (cleared by the next good one)
    last_write_error: str | None = None  # why the last journal write was refused; None once one succeeds
    quarantined_lines: int = 0  # unreadable journal lines set aside into quarantine.jsonl
    dropped_ops: int = 0  # journaled writes for a session deleted meanwhile, not sent


class BatchedWriter:
    def __init__(self, get_db: Callable[[], Db], options: WriterOptions) -> None:
        self._get_db = get_db
        self.options = options
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_done = threading.Condition(self._lock)
        self._status = WriterStatus()
        self._deleted: dict[str, dict[str, int]] = {}  # session id -> what its delete removed (recent ones)
        self._dir, self._dir_lock = journal.claim_dir(options.journal_dir, options.name)
        journal.adopt_orphans(options.journal_dir, self._dir)
        self._seq = journal.max_seq(self._dir) + 1
        self._fd: int | None = None
        self._current_ops = 0
        self._current_bytes = 0
        self._journal_bytes = sum(p.stat().st_size for p in self._segments())
        self._unsent_ops = sum(journal.count_lines(p) for p in self._segments())
        self._thread = threading.Thread(target=self._run, name=f"writer-{options.name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API
    def insert(self, collection: str, doc: dict[str, Any]) -> str:
        """Validate and journal one new document; returns its ``_id``."""
        doc = dict(doc)
        doc.setdefault("_id", uuid.uuid4().hex)
        validate(collection, doc)
        self._append({"op": "insert", "c": collection, "d": doc})
        doc_id: str = doc["_id"]  # a str for every collection with a schema
        return doc_id

    def insert_many(self, collection: str, docs: list[dict[str, Any]]) -> list[str]:
        return [self.insert(collection, d) for d in docs]

    def update(self, collection: str, doc_id: str, fields: dict[str, Any], upsert: bool = False) -> None:
        """Journal a ``$set`` of ``fields`` on the document ``doc_id`` (created when ``upsert``)."""
        validate_fields(collection, fields)
        self._append(_set_record(collection, doc_id, fields, upsert))

    def update_many(self, updates: Sequence[Update]) -> None:
        """Many ``update``s, journaled whole or not at all (one write under one lock)."""
        records: list[JournalRecord] = []
        for u in updates:
            validate_fields(u.collection, u.fields)
            records.append(_set_record(u.collection, u.doc_id, u.fields, u.upsert))
        self._append(*records)

    def delete_session(self, session_id: str) -> None:
        """Journal the delete of a session and everything stored for it (see the module docstring).

        Once it is sent, ``deleted(session_id)`` says how many documents went per collection.
        """
        self._append({"op": "delete_session", "c": "sessions", "id": str(session_id)})

    def deleted(self, session_id: str) -> dict[str, int] | None:
        """What the sent delete of ``session_id`` removed per collection; None while it is unsent."""
        with self._lock:
            counts = self._deleted.get(str(session_id))
            return dict(counts) if counts is not None else None

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Send everything journaled so far; True when the journal is empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._rotate_locked()
            target = self._seq
        self._wake.set()
        with self._flush_done:
            while True:
                # Read once: the flusher deletes segment files without holding this lock.
                oldest = journal.oldest_seq(self._dir)
                if oldest is None or oldest >= target:
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._wake.set()
                self._flush_done.wait(min(0.2, remaining) if remaining is not None else 0.2)

    def status(self) -> WriterStatus:
        with self._lock:
            s = self._status
            return WriterStatus(
                pending_ops=self._unsent_ops,
                journal_bytes=self._journal_bytes,
                flushed_ops=s.flushed_ops,
                rejected_ops=s.rejected_ops,
                last_flush=s.last_flush,
                last_error=s.last_error,
                connected=s.connected,
                segments=len(self._segments()),
                journal_full=s.journal_full,
                last_write_error=s.last_write_error,
                quarantined_lines=s.quarantined_lines,
                dropped_ops=s.dropped_ops,
            )

    def close(self, flush_timeout: float = 10.0) -> None:
        """Flush what can be flushed, then stop; anything unsent stays journaled for replay."""
        if self._stop.is_set():
            return
        with contextlib.suppress(Exception):
            self.flush(flush_timeout)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=flush_timeout)
        with self._lock:
            self._close_fd_locked()
        with contextlib.suppress(OSError):
            fcntl.flock(self._dir_lock, fcntl.LOCK_UN)
            os.close(self._dir_lock)

    # ------------------------------------------------------------------ journal
    def _segments(self) -> list[Path]:
        return journal.segments(self._dir)

    def _append(self, *records: JournalRecord) -> None:
        if not records:
            return
        line = journal.encode(records)
        with self._lock:
            if self._journal_bytes + len(line) > self.options.journal_max_bytes:
                bound = JournalFullError(
                    f"write journal is full ({human_bytes(self._journal_bytes)} of "
                    f"{human_bytes(self.options.journal_max_bytes)}): the database has been unreachable for too long"
                )
                self._refused_locked(bound)
                raise bound
            try:
                self._write_record_locked(line)
            except OSError as exc:
                refused = JournalWriteError.from_os_error(exc)
                if self._status.last_write_error is None:  # once per episode, not once per retried write
                    log.error("journal write refused: %s", exc)
                self._refused_locked(refused)
                raise refused from exc
            self._status.journal_full = False
            self._status.last_write_error = None
            self._current_ops += len(records)
            self._unsent_ops += len(records)
            self._current_bytes += len(line)
            self._journal_bytes += len(line)
            full = self._current_ops >= self.options.max_docs
        if full:
            self._wake.set()

    def _refused_locked(self, exc: JournalError) -> None:
        self._status.journal_full = exc.journal_full
        self._status.last_write_error = str(exc)

    def _write_record_locked(self, line: bytes) -> None:
        """The whole line or nothing: on any error the segment is cut back to where it was."""
        if self._fd is None:
            path = self._dir / f"seg-{self._seq:012d}.jsonl"
            self._fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, FILE_MODE)
        start = self._current_bytes  # this writer's segments are new files: its length so far
        try:
            # One write() per record: a killed process leaves whole lines (the OS keeps them);
            # a short write (disk nearly full) is continued until the line is whole or fails.
            journal.write_all(self._fd, line)
        except OSError:
            self._cut_back_locked(start)
            raise

    def _cut_back_locked(self, start: int) -> None:
        """Remove a partly written record, so the next one never gets glued onto it."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, start)
            return
        except OSError as exc:
            log.error("could not cut a partial record off the journal segment: %s", exc)
        # The partial line stays: close this segment (its torn last line is set aside when it is
        # read) and put later records into a new one.
        with contextlib.suppress(OSError):
            if os.fstat(self._fd).st_size > start:
                self._journal_bytes += os.fstat(self._fd).st_size - start
                self._unsent_ops += 1  # read back as one unreadable line
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None
        self._seq += 1
        self._current_ops = 0
        self._current_bytes = 0

    def _close_fd_locked(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:  # the records are written (page cache); say that the sync failed
                log.error("journal fsync failed: %s", exc)
                self._status.last_write_error = JournalWriteError.from_os_error(exc).args[0]
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _rotate_locked(self) -> None:
        if self._fd is None:
            return
        self._close_fd_locked()
        self._seq += 1
        self._current_ops = 0
        self._current_bytes = 0

    # ------------------------------------------------------------------ flushing
    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.wait(timeout=backoff or self.options.flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            with self._lock:
                self._rotate_locked()
            try:
                ok = self._send_closed_segments()
            except Exception as exc:  # never let the flusher die: the journal keeps the data
                log.exception("unexpected flush error")
                with self._lock:
                    self._status.last_error = f"{type(exc).__name__}: {exc}"[:500]
                ok = False
            backoff = 0.0 if ok else min(self.options.retry_max_seconds, max(0.25, backoff * 2))

    def _send_closed_segments(self) -> bool:
        with self._lock:
            current = self._seq
        for seg in self._segments():
            if journal.seq_of(seg) >= current:
                break  # the open segment is still being written
            try:
                ops, bad = journal.read_segment(seg)
                rejected, dropped = self._send(ops)
            except PyMongoError as exc:
                with self._lock:
                    self._status.last_error = f"{type(exc).__name__}: {exc}"[:500]
                    self._status.connected = False
                log.warning("flush failed, will retry: %s", exc)
                return False
            size = seg.stat().st_size
            if bad:
                journal.quarantine(self.options.journal_dir, seg, bad)
            with contextlib.suppress(FileNotFoundError):  # moved aside whole by _quarantine
                seg.unlink()
            with self._flush_done:
                self._journal_bytes = max(0, self._journal_bytes - size)
                self._unsent_ops = max(0, self._unsent_ops - len(ops) - len(bad))
                self._status.quarantined_lines += len(bad)
                self._status.flushed_ops += len(ops) - rejected - dropped
                self._status.dropped_ops += dropped
                self._status.rejected_ops += rejected
                self._status.last_flush = time.time()
                self._status.last_error = None
                self._status.connected = True
                self._flush_done.notify_all()
        return True

    def _send(self, records: list[JournalRecord]) -> tuple[int, int]:
        """Write one segment; returns how many operations the database refused for good, and how
        many were dropped as writes for a deleted session."""
        return send_segment(self._get_db(), records, self.options.journal_dir, self._record_delete)

    def _record_delete(self, session_id: str, counts: dict[str, int]) -> None:
        with self._lock:
            self._deleted[session_id] = counts
            while len(self._deleted) > 1000:  # only recent results are asked for
                self._deleted.pop(next(iter(self._deleted)))


def _set_record(collection: str, doc_id: str, fields: dict[str, Any], upsert: bool) -> JournalRecord:
    record: JournalRecord = {"op": "set", "c": collection, "id": doc_id, "f": fields}
    if upsert:
        record["u"] = True
    return record
