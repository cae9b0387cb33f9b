"""A candidate's progress over sessions and the two-session comparison (pipeline.progress)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline.progress import (
    UNKNOWN_TYPE,
    candidate_progress,
    compare_sessions,
    comparison_figure,
    format_value,
    progress_figure,
)
from pipeline.storage import ensure_indexes

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _frames(session_id: str, answer_id: str, eye: list[bool | None], faces: int | None = None) -> list[dict[str, Any]]:
    out = []
    for i, e in enumerate(eye):
        face = e is not None or (faces is not None and i < faces)
        out.append({"_id": f"{answer_id}-f{i}", "session_id": session_id, "answer_id": answer_id, "t": 1000 + i,
                    "face": face, "gaze": {"eye_contact": e, "score": 0.5 if e is not None else None}})
    return out


@pytest.fixture
def pdb(db):
    ensure_indexes(db)
    sessions = [
        {"_id": "s1", "candidate": "Ada", "role": "backend", "started_at": T0, "grade": 0.5,
         "questions": [{"type": "technical"}, {"type": "behavioural"}]},
        {"_id": "s2", "candidate": "Ada", "role": "backend", "started_at": T0 + timedelta(days=7), "grade": None,
         "questions": [{"type": "technical"}]},
        {"_id": "s3", "candidate": "Ada", "role": "data", "started_at": T0 + timedelta(days=14), "grade": 0.8},
        {"_id": "x1", "candidate": "Bob", "role": "backend", "started_at": T0, "grade": 0.9,
         "candidate_user": "bob"},
    ]
    answers = [
        {"_id": "s1a0", "session_id": "s1", "index": 0, "grade": {"score": 0.4},
         "metrics": {"wpm": 120.0, "fillers_per_minute": 4.0, "filler_count": 4}},
        {"_id": "s1a1", "session_id": "s1", "index": 1, "grade": {"score": 0.6},
         "metrics": {"wpm": 140.0, "fillers_per_minute": 2.0, "filler_count": 2}},
        {"_id": "s2a0", "session_id": "s2", "index": 0, "grade": None, "metrics": None, "status": "failed"},
        {"_id": "s3a0", "session_id": "s3", "index": 0, "grade": {"score": 0.8},
         "metrics": {"wpm": 150.0, "fillers_per_minute": 1.0, "filler_count": 1}},
        {"_id": "x1a0", "session_id": "x1", "index": 0, "grade": {"score": 0.9}, "metrics": {"wpm": 99.0}},
    ]
    db.sessions.insert_many(sessions)
    db.answers.insert_many(answers)
    # s1: a0 3 of 4 measured frames with eye contact (plus 2 without a face); a1 1 of 2. s2, s3: no frames.
    db.frames.insert_many(_frames("s1", "s1a0", [True, True, True, False, None, None])
                          + _frames("s1", "s1a1", [True, False]) + _frames("x1", "x1a0", [False, False]))
    return db


def test_progress_rows_per_session_are_oldest_first_with_missing_kept_missing(pdb):
    p = candidate_progress(pdb, "Ada")
    assert [r["session_id"] for r in p.sessions] == ["s1", "s2", "s3"]
    s1, s2, s3 = p.sessions
    assert s1["grade"] == 0.5  # the session's stored grade wins
    assert s1["wpm"] == pytest.approx(130.0) and s1["fillers_per_minute"] == pytest.approx(3.0)
    assert s1["filler_count"] == 6 and s1["answers"] == 2
    assert s1["eye_contact"] == pytest.approx(4 / 6)  # frames without a face do not count
    assert s2["grade"] is None and s2["wpm"] is None and s2["eye_contact"] is None and s2["filler_count"] is None
    assert s3["grade"] == 0.8 and s3["eye_contact"] is None  # no frames: missing, not 0


def test_progress_per_question_type(pdb):
    p = candidate_progress(pdb, "Ada")
    rows = {(r["session_id"], r["type"]): r for r in p.by_type}
    assert set(rows) == {("s1", "technical"), ("s1", "behavioural"), ("s2", "technical"), ("s3", UNKNOWN_TYPE)}
    assert rows[("s1", "technical")]["grade"] == pytest.approx(0.4)
    assert rows[("s1", "behavioural")]["wpm"] == pytest.approx(140.0)
    assert rows[("s1", "technical")]["eye_contact"] == pytest.approx(0.75)
    assert rows[("s1", "behavioural")]["eye_contact"] == pytest.approx(0.5)


def test_progress_respects_access_and_coerces_the_name(pdb):
    assert candidate_progress(pdb, "Ada", access={"candidate_user": "bob"}).sessions == []
    assert [r["session_id"] for r in candidate_progress(pdb, "Bob", access={"candidate_user": "bob"}).sessions] == ["x1"]
    assert candidate_progress(pdb, {"$ne": None}).sessions == []  # an operator is just a name nobody has


def test_progress_figures_are_lines_with_gaps(pdb):
    p = candidate_progress(pdb, "Ada")
    fig = progress_figure(p.sessions, "grade")
    assert len(fig.data) == 1 and fig.data[0].mode == "lines+markers" and fig.data[0].connectgaps is False
    assert list(fig.data[0].y) == [0.5, None, 0.8]
    assert fig.data[0].x[0].startswith("2026-01-01")
    typed = progress_figure(p.by_type, "wpm", by="type")
    assert {t.name for t in typed.data} == {"technical", "behavioural", UNKNOWN_TYPE}
    json.loads(fig.to_json())


def test_compare_two_sessions(pdb):
    table = compare_sessions(pdb, "s1", "s3")
    rows = {r["metric"]: r for r in table}
    assert rows["grade"]["first"] == 0.5 and rows["grade"]["second"] == 0.8
    assert rows["grade"]["change"] == pytest.approx(0.3)
    assert rows["eye_contact"]["second"] is None and rows["eye_contact"]["change"] is None
    assert rows["answers"]["first"] == 2 and rows["answers"]["second"] == 1
    assert format_value(rows["grade"]["first"], rows["grade"]["format"]) == "50%"
    assert format_value(None, ".0f") == "—"
    fig = comparison_figure(table)
    assert len(fig.data) == 4 and all(t.type == "bar" and len(t.x) == 2 for t in fig.data)
    assert compare_sessions(pdb, "s1", "nope") is None
    assert compare_sessions(pdb, "s1", "x1", access={"candidate_user": "bob"}) is None
