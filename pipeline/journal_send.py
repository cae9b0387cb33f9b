"""What a sent journal segment does in MongoDB: its records coalesced into one bulk write per
collection, tombstones of deleted sessions, and the delete of everything stored for a session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import InsertOne, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from pipeline.journal import JournalRecord, keep_rejected
from pipeline.storage import DELETED_SESSIONS, NOT_SESSION_DATA, Db

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000

Doc = dict[str, Any]
WriteOp = InsertOne[Doc] | UpdateOne


def send_segment(db: Db, records: list[JournalRecord], journal_dir: Path,
                 on_deleted: Callable[[str, dict[str, int]], None]) -> tuple[int, int]:
    """Write one segment's records; returns how many operations the database refused for good
    (kept in ``journal_dir``), and how many were dropped as writes for a deleted session.
    ``on_deleted`` hears what each of the segment's session deletes removed, per collection."""
    deletes = list(dict.fromkeys(r["id"] for r in records if r["op"] == "delete_session"))
    store_tombstones(db, deletes)  # first: from now on no replay writes these sessions again
    linked = {sid for r in records if (sid := session_of(r)) is not None}
    dead = tombstoned(db, linked)
    kept = [r for r in records if r["op"] != "delete_session" and session_of(r) not in dead]
    dropped = len(records) - len(kept) - sum(r["op"] == "delete_session" for r in records)
    rejected = 0
    for collection, ops in coalesce(kept).items():
        try:
            db[collection].bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            permanent = [e for e in errors if e.get("code") != DUPLICATE_KEY]
            if permanent:
                keep_rejected(journal_dir, collection, permanent)
                rejected += len(permanent)
    # A session another process deleted while these writes were on their way: take them out again
    # (its tombstone was stored before its delete ran, so one of the two sees the other's writes).
    raced = tombstoned(db, linked - dead) if kept else set()
    for sid in [*deletes, *sorted(raced - set(deletes))]:
        counts = purge_session(db, sid)
        if sid in deletes:
            on_deleted(sid, counts)
    if dropped:
        log.info("%d journaled writes for deleted sessions dropped", dropped)
    return rejected, dropped


def session_of(r: JournalRecord) -> str | None:
    """The session a record writes for (None: not tied to one, or a plain update that creates nothing)."""
    sid: object
    if r["op"] == "insert":
        sid = r["d"]["_id"] if r["c"] == "sessions" else r["d"].get("session_id")
    elif r["op"] == "set":
        # A plain $set of a deleted document matches nothing; only an upsert could bring one back.
        sid = r["id"] if r["c"] == "sessions" else r["f"].get("session_id") if r.get("u") else None
    else:
        return None
    return sid if isinstance(sid, str) else None


def tombstoned(db: Db, session_ids: set[str]) -> set[str]:
    """Which of these sessions were deleted (by any writer)."""
    ids = sorted(session_ids)
    found: set[str] = set()
    for i in range(0, len(ids), 1000):
        found.update(d["_id"] for d in db[DELETED_SESSIONS].find({"_id": {"$in": ids[i : i + 1000]}}, {"_id": 1}))
    return found


def store_tombstones(db: Db, session_ids: list[str]) -> None:
    """Mark sessions deleted: from now on no journaled write for them is sent (idempotent)."""
    if session_ids:
        now = datetime.now(UTC)
        db[DELETED_SESSIONS].bulk_write(
            [UpdateOne({"_id": sid}, {"$setOnInsert": {"deleted_at": now}}, upsert=True) for sid in session_ids],
            ordered=False)


def apply_session_delete(db: Db, session_id: str) -> dict[str, int]:
    """Tombstone, then delete, one session now (what a sent ``delete_session`` record does)."""
    store_tombstones(db, [str(session_id)])
    return purge_session(db, str(session_id))


def purge_session(db: Db, session_id: str) -> dict[str, int]:
    """Delete a session and every document holding its ``session_id``; per collection how many went.

    The session document goes last, so an interrupted delete leaves it listed; the segment is
    sent again and the delete repeated.
    """
    linked = ["shares", "frames", "answers"]
    others = sorted(n for n in db.list_collection_names()
                    if n not in NOT_SESSION_DATA and n not in linked and not n.startswith("system."))
    deleted: dict[str, int] = {}
    for name in [*linked, *others]:
        coll: Collection[Doc] = db[name]
        n = coll.delete_many({"session_id": session_id}).deleted_count
        if n or name in linked:
            deleted[name] = n
    deleted["sessions"] = db.sessions.delete_one({"_id": session_id}).deleted_count
    return deleted


def coalesce(records: list[JournalRecord]) -> dict[str, list[WriteOp]]:
    """One operation per document per collection, so unordered execution cannot reorder a doc's ops."""
    # collection -> document id -> [kind ("insert", "set" or "upsert"), the document or its fields]
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
    out: dict[str, list[WriteOp]] = {}
    for collection, docs in by_collection.items():
        out[collection] = [
            InsertOne(body) if kind == "insert"
            else UpdateOne({"_id": doc_id}, {"$set": body}, upsert=kind == "upsert")
            for doc_id, (kind, body) in docs.items()
        ]
    return out


def _set_path(doc: Doc, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        doc = doc.setdefault(p, {})
    doc[parts[-1]] = value
