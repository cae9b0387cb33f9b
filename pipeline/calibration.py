"""Calibration view: how each delivery metric is distributed and how it relates to the grade.

One aggregation pipeline on ``answers`` projects only the few numbers needed (pace, fillers
per minute, pause count, longest pause, eye contact when stored, grade): the client receives
one small row per answer, never the words or features. Re-scored answers take their grade
and recomputed metrics from ``answer_scores`` (pipeline.queries); at session level the rows
are then averaged per session.
A missing value stays missing: it is left out of that metric's distribution and of its
correlation, never counted as 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymongo.database import Database

from pipeline.agreement import pearson
from pipeline.queries import ANSWER_SCORES, rescores_of

# metric -> (label, expression on an answer document)
METRICS: dict[str, tuple[str, Any]] = {
    "wpm": ("Pace (words per minute)", "$metrics.wpm"),
    "fillers_per_minute": ("Fillers per minute", "$metrics.fillers_per_minute"),
    "pauses": (
        "Pauses per answer",
        {"$cond": [{"$isArray": "$metrics.pauses"}, {"$size": "$metrics.pauses"}, None]},
    ),
    "longest_pause_s": ("Longest pause (s)", "$metrics.longest_pause_s"),
    "eye_contact": (
        "Eye contact (share of face frames)",
        {"$ifNull": ["$metrics.eye_contact_ratio", {"$ifNull": ["$eye_contact_ratio", None]}]},
    ),
    "grade": ("Grade (0-1)", "$grade.score"),
}
HIST_BINS = 20


@dataclass
class MetricStats:
    name: str
    label: str
    n: int
    mean: float | None
    median: float | None
    p10: float | None
    p90: float | None
    pearson_with_grade: float | None  # None: fewer than 3 pairs or a constant column
    pairs: int  # rows where both the metric and the grade are present
    values: list[float] = field(default_factory=list, repr=False)


@dataclass
class CalibrationView:
    level: str  # "session" or "answer"
    rows: int
    metrics: dict[str, MetricStats]

    def table(self) -> list[dict[str, Any]]:
        return [
            {
                "metric": m.label, "n": m.n, "mean": _r(m.mean), "median": _r(m.median), "p10": _r(m.p10),
                "p90": _r(m.p90), "pearson r with grade": _r(m.pearson_with_grade), "pairs": m.pairs,
            }
            for m in self.metrics.values()
        ]


def _r(v: float | None, digits: int = 3) -> float | None:
    return None if v is None else round(v, digits)


def pipeline(session_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """The aggregation run on ``answers``: one row of numbers per answer (exposed for tests)."""
    stages: list[dict[str, Any]] = []
    if session_ids is not None:
        stages.append({"$match": {"session_id": {"$in": [str(s) for s in session_ids]}}})
    stages.append({"$project": {"_id": 1, "session_id": 1, **{k: expr for k, (_, expr) in METRICS.items()}}})
    return stages


def _apply_rescore(row: dict[str, Any], rescore: Mapping[str, Any]) -> None:
    if "grade" in rescore:
        row["grade"] = (rescore.get("grade") or {}).get("score")
    metrics = rescore.get("metrics") or {}
    for key in ("wpm", "fillers_per_minute", "longest_pause_s"):
        if key in metrics:
            row[key] = metrics[key]
    if "pauses" in metrics:
        row["pauses"] = len(metrics["pauses"]) if isinstance(metrics["pauses"], list) else None


def _per_session(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean of each metric per session; a metric missing in every answer stays missing."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get("session_id")), []).append(row)
    out = []
    for sid, answers in groups.items():
        merged: dict[str, Any] = {"_id": sid}
        for key in METRICS:
            values = [x for x in (_f(a.get(key)) for a in answers) if not math.isnan(x)]
            merged[key] = sum(values) / len(values) if values else None
        out.append(merged)
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson r over at least 3 pairs; None (not NaN) when it is undefined."""
    r = pearson(a, b, min_n=3)
    return r if math.isfinite(r) else None


def calibration_view(db: Database[dict[str, Any]], level: str = "session", session_ids: list[str] | None = None,
                     session_filter: Mapping[str, Any] | None = None) -> CalibrationView:
    """The view over ``session_ids`` (default: all), narrowed to the sessions matching
    ``session_filter`` when one is given (a user's access filter: a coach sees their own only)."""
    if level not in ("session", "answer"):
        raise ValueError("level must be 'session' or 'answer'")
    if session_filter is not None:
        allowed = [str(d["_id"]) for d in db.sessions.find(dict(session_filter), {"_id": 1}).batch_size(10_000)]
        session_ids = allowed if session_ids is None else [s for s in map(str, session_ids) if s in set(allowed)]
    rows = list(db.answers.aggregate(pipeline(session_ids), allowDiskUse=True, batchSize=10_000))
    rescored = rescores_of(db, session_ids) if session_ids is not None else {
        str(d["_id"]): d for d in db[ANSWER_SCORES].find({}).batch_size(10_000)}
    if rescored:
        for row in rows:
            r = rescored.get(str(row.get("_id")))
            if r:
                _apply_rescore(row, r)
    return summarize(_per_session(rows) if level == "session" else rows, level)


def summarize(rows: Sequence[Mapping[str, Any]], level: str = "session") -> CalibrationView:
    """Distribution and grade correlation of each metric from aggregated rows."""
    cols = {k: np.array([_f(r.get(k)) for r in rows], dtype=np.float64) for k in METRICS}
    grade = cols["grade"]
    out: dict[str, MetricStats] = {}
    for name, (label, _) in METRICS.items():
        col = cols[name]
        present = ~np.isnan(col)
        vals = col[present]
        both = present & ~np.isnan(grade)
        p10, med, p90 = (np.percentile(vals, [10, 50, 90]).tolist() if vals.size else (None, None, None))
        out[name] = MetricStats(
            name=name,
            label=label,
            n=int(vals.size),
            mean=float(vals.mean()) if vals.size else None,
            median=med,
            p10=p10,
            p90=p90,
            pearson_with_grade=None if name == "grade" else _pearson(col[both], grade[both]),
            pairs=int(both.sum()),
            values=vals.tolist(),
        )
    return CalibrationView(level=level, rows=len(rows), metrics=out)


def _f(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def calibration_figure(view: CalibrationView, bins: int = HIST_BINS) -> Any:
    """One histogram per metric (small multiples); a metric with no values shows an empty panel."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(view.metrics)
    cols = 3
    rows = math.ceil(len(names) / cols)
    titles = [
        f"{m.label} · r={m.pearson_with_grade:.2f}" if m.pearson_with_grade is not None else f"{m.label}"
        for m in view.metrics.values()
    ]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, vertical_spacing=0.18)
    for i, name in enumerate(names):
        m = view.metrics[name]
        fig.add_trace(go.Histogram(x=m.values, nbinsx=bins, name=m.label, showlegend=False, marker_color="#1f77b4"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(height=280 * rows, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    fig.update_annotations(font_size=12)
    return fig
