"""Read-side queries the pages run (each backed by an index in pipeline.storage)."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database

SESSION_LIST_FIELDS = {"candidate": 1, "role": 1, "started_at": 1, "status": 1, "grade": 1, "band": 1, "flags": 1}


def list_sessions(db: Database, limit: int = 50, skip: int = 0) -> list[dict[str, Any]]:
    cursor = db.sessions.find({}, SESSION_LIST_FIELDS).sort("started_at", DESCENDING).skip(skip).limit(limit)
    return [{"id": str(d.pop("_id")), **d} for d in cursor]


def get_session(db: Database, session_id: str) -> dict[str, Any] | None:
    if not isinstance(session_id, str):
        return None  # never let a query parameter become an operator
    return db.sessions.find_one({"_id": session_id})


def list_answers(db: Database, session_id: str) -> list[dict[str, Any]]:
    return list(db.answers.find({"session_id": str(session_id)}).sort("index", ASCENDING))
