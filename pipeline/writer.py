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
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from bson import json_util
from pymongo import InsertOne, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from pipeline.schemas import validate, validate_fields
from pipeline.settings import Settings
from pipeline.storage import DELETED_SESSIONS, DIR_MODE, FILE_MODE, NOT_SESSION_DATA, secure_tree

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
_JSON = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, tz_aware=True)


# No room (disk, quota, RLIMIT_FSIZE): the write may succeed once space is back.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class JournalError(RuntimeError):
    """A write was refused and NOT acknowledged: nothing of it is in the journal."""

    journal_full = False  # True when the refusal is for lack of space (bound or disk)


class JournalFullError(JournalError):
    """The on-disk journal reached its bound: the database has been away too long."""

    journal_full = True


class JournalWriteError(JournalError):
    """The journal file could not be written (disk full, I/O error); the record was rolled back."""

    def __init__(self, message: str, errno_: int | None) -> None:
        super().__init__(message)
        self.errno = errno_
        self.journal_full = errno_ in _NO_SPACE

    @classmethod
    def from_os_error(cls, exc: OSError) -> JournalWriteError:
        reason = ("the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                  else "the file size limit is reached" if exc.errno == errno.EFBIG else "the disk failed")
        what = os.strerror(exc.errno) if exc.errno else type(exc).__name__  # never the file name
        return cls(f"could not write to the journal: {reason} ({what}); this write was not saved", exc.errno)


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            break
    return f"{n:.1f} {unit}"


class Update(NamedTuple):
    """One ``$set`` for ``BatchedWriter.update_many``."""

    collection: str
    doc_id: str
    fields: dict[str, Any]
    upsert: bool = False


@dataclass(frozen=True)
class WriterOptions:
    journal_dir: Path
    flush_seconds: float = 5.0
    max_docs: int = 2000
    journal_max_bytes: int = 512 * 1024 * 1024
    retry_max_seconds: float = 30.0
    name: str = "app"

    @classmethod
    def from_settings(cls, settings: Settings, name: str = "app") -> WriterOptions:
        return cls(
            journal_dir=settings.data_dir / "journal",
            flush_seconds=settings.flush_seconds,
            max_docs=settings.flush_max_docs,
            journal_max_bytes=settings.journal_max_bytes,
            retry_max_seconds=settings.retry_max_seconds,
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
    def __init__(self, get_db: Callable[[], Database], options: WriterOptions) -> None:
        self._get_db = get_db
        self.options = options
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_done = threading.Condition(self._lock)
        self._status = WriterStatus()
        self._deleted: dict[str, dict[str, int]] = {}  # session id -> what its delete removed (recent ones)
        self._dir, self._dir_lock = self._claim_dir()
        self._adopt_orphans()
        self._seq = self._max_seq() + 1
        self._fd: int | None = None
        self._current_ops = 0
        self._current_bytes = 0
        self._journal_bytes = sum(p.stat().st_size for p in self._segments())
        self._unsent_ops = sum(_count_lines(p) for p in self._segments())
        self._thread = threading.Thread(target=self._run, name=f"writer-{options.name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API
    def insert(self, collection: str, doc: dict[str, Any]) -> str:
        """Validate and journal one new document; returns its ``_id``."""
        doc = dict(doc)
        doc.setdefault("_id", uuid.uuid4().hex)
        validate(collection, doc)
        self._append({"op": "insert", "c": collection, "d": doc})
        return doc["_id"]

    def insert_many(self, collection: str, docs: list[dict[str, Any]]) -> list[str]:
        return [self.insert(collection, d) for d in docs]

    def update(self, collection: str, doc_id: str, fields: dict[str, Any], upsert: bool = False) -> None:
        """Journal a ``$set`` of ``fields`` on the document ``doc_id`` (created when ``upsert``)."""
        validate_fields(collection, fields)
        self._append({"op": "set", "c": collection, "id": doc_id, "f": fields, **({"u": True} if upsert else {})})

    def update_many(self, updates: Sequence[Update]) -> None:
        """Many ``update``s, journaled whole or not at all (one write under one lock)."""
        records = []
        for u in updates:
            validate_fields(u.collection, u.fields)
            records.append({"op": "set", "c": u.collection, "id": u.doc_id, "f": u.fields,
                            **({"u": True} if u.upsert else {})})
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
                oldest = self._oldest_seq()
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
    def _claim_dir(self) -> tuple[Path, int]:
        root = self.options.journal_dir
        root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        secure_tree(root)  # owner-only, also what an older version left group/world-readable
        for i in range(1000):
            d = root / (self.options.name if i == 0 else f"{self.options.name}-{i}")
            d.mkdir(mode=DIR_MODE, exist_ok=True)
            fd = os.open(d / ".lock", os.O_CREAT | os.O_RDWR, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return d, fd
            except BlockingIOError:
                os.close(fd)  # a live writer holds it; try the next name
        raise RuntimeError(f"no free journal folder under {root}")

    def _adopt_orphans(self) -> None:
        """Take over segments of writers that died (their folder lock is free)."""
        for d in sorted(self.options.journal_dir.iterdir()):
            if d == self._dir or not d.is_dir():
                continue
            fd = os.open(d / ".lock", os.O_CREAT | os.O_RDWR, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                segs = sorted(d.glob("seg-*.jsonl"))
                if segs:
                    base = self._max_seq() + 1
                    for i, seg in enumerate(segs):
                        seg.rename(self._dir / f"seg-{base + i:012d}.jsonl")
                    log.info("adopted %d journal segments from %s", len(segs), d)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _segments(self) -> list[Path]:
        return sorted(self._dir.glob("seg-*.jsonl"))

    def _max_seq(self) -> int:
        segs = self._segments()
        return int(segs[-1].stem.split("-")[1]) if segs else 0

    def _oldest_seq(self) -> int | None:
        segs = self._segments()
        return int(segs[0].stem.split("-")[1]) if segs else None

    def _append(self, *records: dict[str, Any]) -> None:
        if not records:
            return
        line = b"".join((json_util.dumps(r, json_options=_JSON) + "\n").encode() for r in records)
        with self._lock:
            if self._journal_bytes + len(line) > self.options.journal_max_bytes:
                full = JournalFullError(
                    f"write journal is full ({human_bytes(self._journal_bytes)} of "
                    f"{human_bytes(self.options.journal_max_bytes)}): the database has been unreachable for too long"
                )
                self._refused_locked(full)
                raise full
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
            _write_all(self._fd, line)
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
            if int(seg.stem.split("-")[1]) >= current:
                break  # the open segment is still being written
            try:
                ops, bad = _read_segment(seg)
                rejected, dropped = self._send(ops)
            except PyMongoError as exc:
                with self._lock:
                    self._status.last_error = f"{type(exc).__name__}: {exc}"[:500]
                    self._status.connected = False
                log.warning("flush failed, will retry: %s", exc)
                return False
            size = seg.stat().st_size
            if bad:
                self._quarantine(seg, bad)
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

    def _send(self, records: list[dict[str, Any]]) -> tuple[int, int]:
        """Write one segment; returns how many operations the database refused for good, and how
        many were dropped as writes for a deleted session."""
        db = self._get_db()
        deletes = list(dict.fromkeys(r["id"] for r in records if r["op"] == "delete_session"))
        store_tombstones(db, deletes)  # first: from now on no replay writes these sessions again
        linked = {sid for r in records if (sid := _session_of(r)) is not None}
        dead = _tombstoned(db, linked)
        kept = [r for r in records if r["op"] != "delete_session" and _session_of(r) not in dead]
        dropped = len(records) - len(kept) - sum(r["op"] == "delete_session" for r in records)
        rejected = 0
        for collection, ops in _coalesce(kept).items():
            try:
                db[collection].bulk_write(ops, ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                permanent = [e for e in errors if e.get("code") != DUPLICATE_KEY]
                if permanent:
                    self._reject(collection, permanent)
                    rejected += len(permanent)
        # A session another process deleted while these writes were on their way: take them out again
        # (its tombstone was stored before its delete ran, so one of the two sees the other's writes).
        raced = _tombstoned(db, linked - dead) if kept else set()
        for sid in [*deletes, *sorted(raced - set(deletes))]:
            counts = _purge_session(db, sid)
            if sid in deletes:
                with self._lock:
                    self._deleted[sid] = counts
                    while len(self._deleted) > 1000:  # only recent results are asked for
                        self._deleted.pop(next(iter(self._deleted)))
        if dropped:
            log.info("%d journaled writes for deleted sessions dropped", dropped)
        return rejected, dropped

    def _reject(self, collection: str, errors: list[dict[str, Any]]) -> None:
        # The server refused these for good (not a connectivity problem): keep them on disk.
        path = self.options.journal_dir / "rejected.jsonl"
        with open(path, "a", opener=_owner_only) as fh:
            for e in errors:
                fh.write(json_util.dumps({"c": collection, "error": e}, json_options=_JSON) + "\n")
        log.error("%d %s writes rejected by the database, kept in %s", len(errors), collection, path)

    def _quarantine(self, seg: Path, bad: list[tuple[int, bytes, str]]) -> None:
        """Set unreadable lines aside (owner-only) so the rest of the queue goes on."""
        path = self.options.journal_dir / "quarantine.jsonl"
        entries = b"".join(
            (json.dumps({"segment": f"{seg.parent.name}/{seg.name}", "line": n, "reason": reason,
                         "raw": raw.decode("utf-8", "backslashreplace"), "at": time.time()}) + "\n").encode()
            for n, raw, reason in bad
        )
        try:
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
            try:
                _write_all(fd, entries)
            finally:
                os.close(fd)
        except OSError as exc:
            # No room for the copy (disk full): keep the whole segment aside instead, a rename needs none.
            aside = self.options.journal_dir / f"quarantine-{seg.parent.name}-{seg.name}"
            seg.rename(aside)
            log.error("could not write %s (%s): kept the whole segment as %s", path, exc, aside)
        for n, _, reason in bad:
            log.warning("journal line %d of %s set aside into %s: %s", n, seg.name, path.name, reason)


def _owner_only(path: str, flags: int) -> int:
    return os.open(path, flags, FILE_MODE)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # a regular file writes at least one byte or fails; never spin
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def _read_segment(path: Path) -> tuple[list[dict[str, Any]], list[tuple[int, bytes, str]]]:
    """The segment's records, and its unreadable lines as (line number, raw bytes, reason)."""
    records: list[dict[str, Any]] = []
    bad: list[tuple[int, bytes, str]] = []
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.endswith(b"\n"):
                bad.append((n, raw, "torn last line (no newline)"))
                continue
            try:
                record = json_util.loads(raw.decode("utf-8"), json_options=_JSON)
            except Exception as exc:  # bad UTF-8, bad JSON, bad extended-JSON value: all unreadable
                bad.append((n, raw, f"unreadable: {type(exc).__name__}"))
                continue
            problem = _record_problem(record)
            if problem:
                bad.append((n, raw, problem))
            else:
                records.append(record)
    return records, bad


def _record_problem(r: Any) -> str | None:
    """Why a decoded line is not a journal record (``_coalesce`` must never fail on one)."""
    if not isinstance(r, dict) or not isinstance(r.get("c"), str) or not r["c"]:
        return "not a journal record"
    if r.get("op") == "insert":
        return None if isinstance(r.get("d"), dict) and "_id" in r["d"] else "insert without a document id"
    if r.get("op") == "set":
        return None if "id" in r and isinstance(r.get("f"), dict) else "update without an id or fields"
    if r.get("op") == "delete_session":
        return None if isinstance(r.get("id"), str) and r["id"] else "delete without a session id"
    return "unknown operation"


def _session_of(r: dict[str, Any]) -> str | None:
    """The session a record writes for (None: not tied to one, or a plain update that creates nothing)."""
    if r["op"] == "insert":
        sid = r["d"]["_id"] if r["c"] == "sessions" else r["d"].get("session_id")
    elif r["op"] == "set":
        # A plain $set of a deleted document matches nothing; only an upsert could bring one back.
        sid = r["id"] if r["c"] == "sessions" else r["f"].get("session_id") if r.get("u") else None
    else:
        return None
    return sid if isinstance(sid, str) else None


def _tombstoned(db: Database, session_ids: set[str]) -> set[str]:
    """Which of these sessions were deleted (by any writer)."""
    ids = sorted(session_ids)
    found: set[str] = set()
    for i in range(0, len(ids), 1000):
        found.update(d["_id"] for d in db[DELETED_SESSIONS].find({"_id": {"$in": ids[i : i + 1000]}}, {"_id": 1}))
    return found


def store_tombstones(db: Database, session_ids: list[str]) -> None:
    """Mark sessions deleted: from now on no journaled write for them is sent (idempotent)."""
    if session_ids:
        now = datetime.now(UTC)
        db[DELETED_SESSIONS].bulk_write(
            [UpdateOne({"_id": sid}, {"$setOnInsert": {"deleted_at": now}}, upsert=True) for sid in session_ids],
            ordered=False)


def apply_session_delete(db: Database, session_id: str) -> dict[str, int]:
    """Tombstone, then delete, one session now (what a sent ``delete_session`` record does)."""
    store_tombstones(db, [str(session_id)])
    return _purge_session(db, str(session_id))


def _purge_session(db: Database, session_id: str) -> dict[str, int]:
    """Delete a session and every document holding its ``session_id``; per collection how many went.

    The session document goes last, so an interrupted delete leaves it listed; the segment is
    sent again and the delete repeated.
    """
    linked = ["shares", "frames", "answers"]
    others = sorted(n for n in db.list_collection_names()
                    if n not in NOT_SESSION_DATA and n not in linked and not n.startswith("system."))
    deleted: dict[str, int] = {}
    for name in [*linked, *others]:
        coll: Collection = db[name]
        n = coll.delete_many({"session_id": session_id}).deleted_count
        if n or name in linked:
            deleted[name] = n
    deleted["sessions"] = db.sessions.delete_one({"_id": session_id}).deleted_count
    return deleted


def _coalesce(records: list[dict[str, Any]]) -> dict[str, list[InsertOne | UpdateOne]]:
    """One operation per document per collection, so unordered execution cannot reorder a doc's ops."""
    by_collection: dict[str, dict[Any, list[Any]]] = {}
    for r in records:
        docs = by_collection.setdefault(r["c"], {})
        if r["op"] == "insert":
            doc = r["d"]
            docs[doc["_id"]] = ["insert", doc]
        else:
            entry = docs.get(r["id"])
            if entry is None:
                docs[r["id"]] = ["upsert" if r.get("u") else "set", dict(r["f"])]
            elif entry[0] == "insert":
                for key, value in r["f"].items():
                    _set_path(entry[1], key, value)
            else:
                entry[1].update(r["f"])
                if r.get("u"):
                    entry[0] = "upsert"
    out: dict[str, list[InsertOne | UpdateOne]] = {}
    for collection, docs in by_collection.items():
        out[collection] = [
            InsertOne(body) if kind == "insert"
            else UpdateOne({"_id": doc_id}, {"$set": body}, upsert=kind == "upsert")
            for doc_id, (kind, body) in docs.items()
        ]
    return out


def _set_path(doc: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        doc = doc.setdefault(p, {})
    doc[parts[-1]] = value
