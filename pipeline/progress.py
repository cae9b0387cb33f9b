"""A candidate's progress over sessions, and two sessions side by side. No Streamlit here.

Everything is read with aggregates that return a few numbers per answer (never words,
features or frames): one on ``answers`` (grade, pace, fillers) and one on ``frames``
(eye contact, as the share of face frames with eye contact, like the report's card).
A missing value stays missing (None, a gap in the line), never 0.

Question type comes from ``session.questions[answer.index].type`` when the session
stored its questions; otherwise the answer counts as type "unknown".
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pipeline.queries import and_filters, rescores_of
from pipeline.safe_text import plain_html
from pipeline.storage import Db

# metric -> (label, axis format)
METRICS: dict[str, tuple[str, str]] = {
    "grade": ("Grade", ".0%"),
    "wpm": ("Pace (words per minute)", ".0f"),
    "fillers_per_minute": ("Fillers per minute", ".1f"),
    "eye_contact": ("Eye contact (share of face frames)", ".0%"),
}
UNKNOWN_TYPE = "unknown"
MAX_SESSIONS = 500  # a progress chart of more sessions than this shows the newest 500
SESSION_FIELDS = {"candidate": 1, "role": 1, "started_at": 1, "grade": 1, "band": 1, "questions.type": 1}


@dataclass(frozen=True)
class Progress:
    candidate: str
    sessions: list[dict[str, Any]]  # one row per session, oldest first: date, role, answers and METRICS
    by_type: list[dict[str, Any]]  # one row per (session, question type): the same metrics


def _num(value: Any) -> float | None:  # anything float() takes; the rest is missing
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _mean(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else None


def answer_rows(db: Db, session_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Per answer: session, index, grade, pace, fillers (one aggregate, by_session index)."""
    ids = [str(s) for s in session_ids]
    if not ids:
        return []
    pipeline: list[dict[str, Any]] = [
        {"$match": {"session_id": {"$in": ids}}},
        {"$project": {"_id": 1, "session_id": 1, "index": 1, "grade": "$grade.score", "wpm": "$metrics.wpm",
                      "fillers_per_minute": "$metrics.fillers_per_minute", "filler_count": "$metrics.filler_count"}},
    ]
    rows = list(db.answers.aggregate(pipeline))
    rescored = rescores_of(db, ids)
    for row in rows:  # a re-score's grade and metrics win over the stored ones
        r = rescored.get(str(row["_id"]))
        if r:
            row["grade"] = (r.get("grade") or {}).get("score")
            metrics = r.get("metrics") or {}
            for key in ("wpm", "fillers_per_minute", "filler_count"):
                if key in metrics:
                    row[key] = metrics[key]
    return rows


def eye_contact_by_answer(db: Db, session_ids: Sequence[str]) -> dict[tuple[str, str], tuple[int, int]]:
    """(session, answer) -> (frames with eye contact, face frames where it was measured).

    One aggregate over ``frames`` (by_answer_time index); frames without a face or
    without an eye-contact estimate do not count either way.
    """
    ids = [str(s) for s in session_ids]
    if not ids:
        return {}
    eye = "$gaze.eye_contact"
    pipeline = [
        {"$match": {"session_id": {"$in": ids}, "face": True}},
        {"$group": {
            "_id": {"s": "$session_id", "a": "$answer_id"},
            "yes": {"$sum": {"$cond": [{"$eq": [eye, True]}, 1, 0]}},
            "measured": {"$sum": {"$cond": [{"$in": [eye, [True, False]]}, 1, 0]}},
        }},
    ]
    return {(str(d["_id"]["s"]), str(d["_id"]["a"])): (int(d["yes"]), int(d["measured"]))
            for d in db.frames.aggregate(pipeline)}


def _question_type(session: Mapping[str, Any], index: object) -> str:
    questions = session.get("questions") or []
    if isinstance(index, int) and 0 <= index < len(questions):
        qtype = (questions[index] or {}).get("type")
        if qtype:
            return str(qtype)
    return UNKNOWN_TYPE


def _summarise(answers: Sequence[Mapping[str, Any]], eye: Mapping[tuple[str, str], tuple[int, int]]) -> dict[str, Any]:
    yes = measured = 0
    for a in answers:
        y, m = eye.get((str(a["session_id"]), str(a["_id"])), (0, 0))
        yes, measured = yes + y, measured + m
    return {
        "answers": len(answers),
        "grade": _mean([_num(a.get("grade")) for a in answers]),
        "wpm": _mean([_num(a.get("wpm")) for a in answers]),
        "fillers_per_minute": _mean([_num(a.get("fillers_per_minute")) for a in answers]),
        "filler_count": sum(int(_num(a.get("filler_count")) or 0) for a in answers)
        if any(_num(a.get("filler_count")) is not None for a in answers) else None,
        "eye_contact": yes / measured if measured else None,
    }


def session_metrics(db: Db, sessions: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]],
                                                                                 list[dict[str, Any]]]:
    """(per-session rows, per-(session, question type) rows) for these session documents.

    The session's own stored grade wins over the mean of its answers (it is what the
    report shows); every other value is computed from its answers and frames.
    """
    ids = [str(s["_id"]) for s in sessions]
    by_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in answer_rows(db, ids):
        by_session[str(row["session_id"])].append(row)
    eye = eye_contact_by_answer(db, ids)
    rows: list[dict[str, Any]] = []
    typed: list[dict[str, Any]] = []
    for s in sessions:
        sid = str(s["_id"])
        answers = sorted(by_session.get(sid, []), key=lambda a: (a.get("index") is None, a.get("index") or 0))
        base = {"session_id": sid, "started_at": s.get("started_at"), "role": s.get("role") or "",
                "band": s.get("band")}
        summary = _summarise(answers, eye)
        stored = _num(s.get("grade"))
        if stored is not None:
            summary["grade"] = stored
        rows.append({**base, **summary})
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for a in answers:
            groups[_question_type(s, a.get("index"))].append(a)
        for qtype in sorted(groups):
            typed.append({**base, "type": qtype, **_summarise(groups[qtype], eye)})
    return rows, typed


def candidate_progress(db: Db, candidate: object, access: Mapping[str, Any] | None = None,
                       limit: int = MAX_SESSIONS) -> Progress:
    """Every session of ``candidate`` the caller may see (oldest first), with its metrics."""
    name = str(candidate).strip()[:200]
    query = and_filters({"candidate": name}, access)
    newest = list(db.sessions.find(query, SESSION_FIELDS).sort("started_at", -1).limit(max(1, int(limit))))
    sessions = list(reversed(newest))
    rows, typed = session_metrics(db, sessions)
    return Progress(name, rows, typed)


def compare_sessions(db: Db, first_id: object, second_id: object,
                     access: Mapping[str, Any] | None = None) -> list[dict[str, Any]] | None:
    """The metrics of two sessions side by side: one row per metric with both values and the change.

    None when either session does not exist or is not visible to the caller.
    """
    ids = [str(first_id), str(second_id)]
    found = {str(s["_id"]): s for s in db.sessions.find(and_filters({"_id": {"$in": ids}}, access), SESSION_FIELDS)}
    if any(i not in found for i in ids):
        return None
    rows, _ = session_metrics(db, [found[i] for i in ids])
    a, b = rows[0], rows[1] if len(rows) > 1 else rows[0]
    table = []
    for key, (label, fmt) in {**METRICS, "filler_count": ("Fillers (count)", ".0f"),
                              "answers": ("Answers", ".0f")}.items():
        va, vb = _num(a.get(key)), _num(b.get(key))
        table.append({"metric": key, "label": label, "format": fmt, "first": va, "second": vb,
                      "change": vb - va if va is not None and vb is not None else None})
    return table


def format_value(value: float | None, fmt: str) -> str:
    if value is None:
        return "—"
    return f"{value:{fmt}}"


# --------------------------------------------------------------------------- figures


def _when(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def progress_figure(rows: Sequence[Mapping[str, Any]], metric: str, *, by: str | None = None,
                    title: str | None = None) -> go.Figure:
    """A line per series (one, or one per ``by`` value such as the question type) of ``metric``
    over session dates; a missing value is a gap, never a made-up point."""
    label, fmt = METRICS[metric]
    series: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        series[str(r.get(by)) if by else label].append(r)
    fig = go.Figure()
    for name in sorted(series):
        pts = series[name]
        fig.add_trace(go.Scatter(
            x=[_when(r.get("started_at")) for r in pts], y=[_num(r.get(metric)) for r in pts],
            mode="lines+markers", name=plain_html(name), connectgaps=False,  # Plotly applies tags in labels
            customdata=[[plain_html(r.get("role") or ""), r.get("answers") or 0] for r in pts],
            hovertemplate=f"%{{x|%Y-%m-%d %H:%M}}<br>{label}: %{{y:{fmt}}}<br>%{{customdata[0]}}, "
                          "%{customdata[1]} answers<extra>%{fullData.name}</extra>",
        ))
    fig.update_layout(title=title or label, height=300, margin={"l": 40, "r": 10, "t": 40, "b": 30},
                      showlegend=bool(by), hovermode="closest")
    fig.update_yaxes(tickformat=fmt, rangemode="tozero")
    fig.update_xaxes(title_text="session date")
    return fig


def comparison_figure(table: Sequence[Mapping[str, Any]], first_label: str = "first",
                      second_label: str = "second") -> go.Figure:
    """Small bar charts, one per metric of METRICS, the two sessions side by side."""
    rows = [r for r in table if r["metric"] in METRICS]
    fig = make_subplots(rows=1, cols=len(rows), subplot_titles=[r["label"] for r in rows])
    for i, r in enumerate(rows, start=1):
        ys = [r["first"], r["second"]]
        fig.add_trace(go.Bar(
            x=[first_label, second_label], y=ys, marker_color=["#8c9eff", "#1f77b4"], showlegend=False,
            text=[format_value(v, r["format"]) for v in ys], textposition="auto",
            hovertemplate=f"%{{x}}: %{{y:{r['format']}}}<extra>{r['label']}</extra>",
        ), row=1, col=i)
        fig.update_yaxes(tickformat=r["format"], rangemode="tozero", row=1, col=i)
    fig.update_layout(height=280, margin={"l": 30, "r": 10, "t": 50, "b": 30})
    fig.update_annotations(font_size=11)
    return fig
