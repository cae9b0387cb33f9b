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


# --- session report ------------------------------------------------------------------

# Only what the report draws: no box, offsets or ids (a 60-minute answer has ~27,000 frames).
FRAME_REPORT_FIELDS = {
    "_id": 0, "t": 1, "face": 1, "emotions": 1, "dominant": 1, "confidence": 1, "uncertain": 1,
    "gaze.score": 1, "gaze.eye_contact": 1, "head.movement": 1,
}


def find_session(db: Database, session_id: Any) -> dict[str, Any] | None:
    """A session by id; the id is coerced to str so a query parameter can never be an operator."""
    return db.sessions.find_one({"_id": str(session_id)})


def list_report_answers(db: Database, session_id: Any) -> list[dict[str, Any]]:
    """Every answer of a session in order, whole (the report shows words, metrics and grade)."""
    return list(db.answers.find({"session_id": str(session_id)}).sort("index", ASCENDING))


def list_answer_frames(db: Database, session_id: Any, answer_id: Any) -> list[dict[str, Any]]:
    """One answer's frames in time order (index by_answer_time: session_id, answer_id, t)."""
    query = {"session_id": str(session_id), "answer_id": str(answer_id)}
    return list(db.frames.find(query, FRAME_REPORT_FIELDS).sort("t", ASCENDING).batch_size(5000))
