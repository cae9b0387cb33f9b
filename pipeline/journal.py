"""The writer's on-disk journal: its record format, segment files (claim, adopt, append, read back),
the errors a refused write raises, and the files set aside (quarantined lines, rejected writes).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Literal, Required, TypedDict, cast

from bson import json_util

from pipeline.storage import DIR_MODE, FILE_MODE, secure_tree

log = logging.getLogger(__name__)

JSON_OPTIONS = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, tz_aware=True)

# No room (disk, quota, RLIMIT_FSIZE): the write may succeed once space is back.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class JournalRecord(TypedDict, total=False):
    """One journal line: ``insert`` (``d``: the document), ``set`` (``id``, ``f``: its fields,
    ``u``: upsert) or ``delete_session`` (``id``: the session), all on collection ``c``."""

    op: Required[Literal["insert", "set", "delete_session"]]
    c: Required[str]
    d: dict[str, Any]
    id: str
    f: dict[str, Any]
    u: bool


# A journal line that could not be read back: (line number, raw bytes, reason).
BadLine = tuple[int, bytes, str]


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


def encode(records: tuple[JournalRecord, ...]) -> bytes:
    """The journal lines of ``records`` (canonical extended JSON, one line each)."""
    return b"".join((json_util.dumps(r, json_options=JSON_OPTIONS) + "\n").encode() for r in records)


# --------------------------------------------------------------------------- segment folders


def claim_dir(root: Path, name: str) -> tuple[Path, int]:
    """This writer's own folder under ``root`` (``name``, else ``name-1``…) and the fd of its lock."""
    root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    secure_tree(root)  # owner-only, also what an older version left group/world-readable
    for i in range(1000):
        d = root / (name if i == 0 else f"{name}-{i}")
        d.mkdir(mode=DIR_MODE, exist_ok=True)
        fd = os.open(d / ".lock", os.O_CREAT | os.O_RDWR, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return d, fd
        except BlockingIOError:
            os.close(fd)  # a live writer holds it; try the next name
    raise RuntimeError(f"no free journal folder under {root}")


def adopt_orphans(root: Path, own: Path) -> None:
    """Take over segments of writers that died (their folder lock is free) into ``own``."""
    for d in sorted(root.iterdir()):
        if d == own or not d.is_dir():
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
                base = max_seq(own) + 1
                for i, seg in enumerate(segs):
                    seg.rename(own / f"seg-{base + i:012d}.jsonl")
                log.info("adopted %d journal segments from %s", len(segs), d)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("seg-*.jsonl"))


def seq_of(segment: Path) -> int:
    return int(segment.stem.split("-")[1])


def max_seq(folder: Path) -> int:
    segs = segments(folder)
    return seq_of(segs[-1]) if segs else 0


def oldest_seq(folder: Path) -> int | None:
    segs = segments(folder)
    return seq_of(segs[0]) if segs else None


# --------------------------------------------------------------------------- files


def _owner_only(path: str, flags: int) -> int:
    return os.open(path, flags, FILE_MODE)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # a regular file writes at least one byte or fails; never spin
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def read_segment(path: Path) -> tuple[list[JournalRecord], list[BadLine]]:
    """The segment's records, and its unreadable lines as (line number, raw bytes, reason)."""
    records: list[JournalRecord] = []
    bad: list[BadLine] = []
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.endswith(b"\n"):
                bad.append((n, raw, "torn last line (no newline)"))
                continue
            try:
                record = json_util.loads(raw.decode("utf-8"), json_options=JSON_OPTIONS)
            except Exception as exc:  # bad UTF-8, bad JSON, bad extended-JSON value: all unreadable
                bad.append((n, raw, f"unreadable: {type(exc).__name__}"))
                continue
            problem = record_problem(record)
            if problem:
                bad.append((n, raw, problem))
            else:
                records.append(cast(JournalRecord, record))
    return records, bad


def record_problem(r: object) -> str | None:
    """Why a decoded line is not a journal record (``coalesce`` must never fail on one)."""
    if not isinstance(r, dict) or not isinstance(r.get("c"), str) or not r["c"]:
        return "not a journal record"
    if r.get("op") == "insert":
        return None if isinstance(r.get("d"), dict) and "_id" in r["d"] else "insert without a document id"
    if r.get("op") == "set":
        return None if "id" in r and isinstance(r.get("f"), dict) else "update without an id or fields"
    if r.get("op") == "delete_session":
        return None if isinstance(r.get("id"), str) and r["id"] else "delete without a session id"
    return "unknown operation"


def keep_rejected(journal_dir: Path, collection: str, errors: list[dict[str, Any]]) -> None:
    """The server refused these for good (not a connectivity problem): keep them on disk."""
    path = journal_dir / "rejected.jsonl"
    with open(path, "a", opener=_owner_only) as fh:
        for e in errors:
            fh.write(json_util.dumps({"c": collection, "error": e}, json_options=JSON_OPTIONS) + "\n")
    log.error("%d %s writes rejected by the database, kept in %s", len(errors), collection, path)


def quarantine(journal_dir: Path, seg: Path, bad: list[BadLine]) -> None:
    """Set unreadable lines aside (owner-only) so the rest of the queue goes on."""
    path = journal_dir / "quarantine.jsonl"
    entries = b"".join(
        (json.dumps({"segment": f"{seg.parent.name}/{seg.name}", "line": n, "reason": reason,
                     "raw": raw.decode("utf-8", "backslashreplace"), "at": time.time()}) + "\n").encode()
        for n, raw, reason in bad
    )
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        try:
            write_all(fd, entries)
        finally:
            os.close(fd)
    except OSError as exc:
        # No room for the copy (disk full): keep the whole segment aside instead, a rename needs none.
        aside = journal_dir / f"quarantine-{seg.parent.name}-{seg.name}"
        seg.rename(aside)
        log.error("could not write %s (%s): kept the whole segment as %s", path, exc, aside)
    for n, _, reason in bad:
        log.warning("journal line %d of %s set aside into %s: %s", n, seg.name, path.name, reason)
