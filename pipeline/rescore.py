"""Re-score stored sessions under new thresholds without running any model.

The pure stages (speech metrics, session grade, Mohler effect) are in ``pipeline.recompute``.
Each stored answer carries the grader's features (``GradeFeatures.to_dict()``) and its
timed words, so a new threshold set only needs the pure stages:

- grade: ``grading.score(GradeFeatures.from_dict(features), GradeOptions.from_settings(new))``;
- speech metrics: recomputed from the stored words with the pure ``speech_metrics`` functions,
  and only the parts a changed threshold affects (filler list -> fillers; pause length ->
  pauses; pace band -> ``pace_band`` from the stored wpm). The thresholds the stored metrics
  were computed with come from the session (``scored_thresholds`` written by a previous
  re-score, else its ``settings`` snapshot); when unknown, fillers and pauses are recomputed.
  Audio is never needed: the stored prosody, wpm and pace track are kept as they are;
- session: grade = mean of its graded answers, band from the new cut-offs, flags = union of
  its answers' grade flags (as ``pipeline.interview.summarise``).

``rescore(..., write=False)`` only reports the effect (before/after grades, band changes and
the band transition matrix); ``write=True`` stores the new grades with
``profile: {name, version}``: per answer in ``answer_scores`` (one small document each, read
back through ``pipeline.queries.with_rescores``; the answer documents with their words are
never rewritten, which on the embedded server costs in proportion to their size), per
session on the session. With the app's ``writer`` (what the pages pass) every grade goes
through its journal in one record batch (all or nothing, ordered with the other writes, and
dropped for a session deleted meanwhile: a re-score never brings a deleted session back),
then the writer is flushed so the caller reads what it wrote. Writing needs that writer: a
direct write could land after a journaled delete. A previous re-score is the "before" of the next one.

``mohler_effect(settings, data_path)``: Pearson r and RMSE (0-5 scale) of the grader on the
Mohler 2011 data under the given grading thresholds. Features are computed once with the
sentence model (``pipeline.mohler.grading_features`` and its embedding cache), then cached
as JSON keyed by the data file's hash, so every later call only applies ``score()``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.database import Database

from pipeline.grading_features import GradeFeatures
from pipeline.grading_score import BANDS, GradeOptions, score
from pipeline.profiles import SPEECH_FIELDS, thresholds_of
from pipeline.queries import ANSWER_SCORES, merge_rescore, rescores_of
from pipeline.recompute import (  # re-exported: the pure stages and the Mohler effect live there
    MohlerEffect,
    file_sha256,
    mohler_cache_path,
    mohler_effect,
    mohler_features,
    num,
    session_grade,
    speech_fields,
    speech_plan,
    write_mohler_cache,
)
from pipeline.settings import Settings
from pipeline.speech_metrics import SpeechMetricsOptions
from pipeline.writer import BatchedWriter, Update

__all__ = [
    "BAND_LABELS", "MohlerEffect", "RescoreResult", "effect_figure", "file_sha256", "mohler_cache_path",
    "mohler_effect", "mohler_features", "rescore", "write_mohler_cache",
]

log = logging.getLogger(__name__)

NO_BAND = "none"  # row/column of the transition matrix for answers without a grade
BAND_LABELS = (*BANDS, NO_BAND)
IN_CHUNK = 500  # session ids per $in query
FULL_SCAN_SHARE = 0.2  # selecting more than this share of sessions: one scan beats $in look-ups


@dataclass
class RescoreResult:
    profile: dict[str, Any] | None
    sessions: int = 0
    answers: int = 0
    rescored: int = 0  # answers with stored features, graded again
    skipped: int = 0  # answers without features: left exactly as stored
    before: list[float | None] = field(default_factory=list)  # answer scores, aligned with ``after``
    after: list[float | None] = field(default_factory=list)
    session_before: list[float | None] = field(default_factory=list)
    session_after: list[float | None] = field(default_factory=list)
    band_changes: int = 0  # answers whose band changed
    session_band_changes: int = 0
    transitions: dict[str, dict[str, int]] = field(default_factory=dict)  # before band -> after band -> n
    speech: dict[str, int] = field(default_factory=dict)  # answers whose fillers/pauses/pace band were recomputed
    timings: dict[str, float] = field(default_factory=dict)
    written: bool = False
    pending: bool = False  # written to the journal, not yet in the database (it was slow or away)

    def transition_rows(self) -> list[dict[str, Any]]:
        """The transition matrix as table rows: one per band before, one column per band after."""
        return [{"before \\ after": b, **self.transitions.get(b, {})} for b in BAND_LABELS]

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("before", "after", "session_before", "session_after"):
            out.pop(key)
        return out


def _empty_transitions() -> dict[str, dict[str, int]]:
    return {b: dict.fromkeys(BAND_LABELS, 0) for b in BAND_LABELS}


def _json_thresholds(settings: Settings) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in thresholds_of(settings).items()}


def _select_sessions(
    db: Database[dict[str, Any]], session_filter: Mapping[str, Any] | None, limit: int | None
) -> list[dict[str, Any]]:
    proj = {"grade": 1, "band": 1, "scored_thresholds": 1, **{f"settings.{n}": 1 for n in SPEECH_FIELDS}}
    cursor = db.sessions.find(dict(session_filter or {}), proj).sort("started_at", DESCENDING)
    if limit is not None:
        cursor = cursor.limit(max(0, int(limit)))
    return list(cursor.batch_size(5000))


def _answers(db: Database[dict[str, Any]], ids: list[str], everything: bool, projection: dict[str, Any]) -> Iterable[dict[str, Any]]:
    if everything:
        wanted = set(ids)
        for doc in db.answers.find({}, projection).batch_size(2000):
            if doc.get("session_id") in wanted:
                yield doc
        return
    for i in range(0, len(ids), IN_CHUNK):
        yield from db.answers.find({"session_id": {"$in": ids[i : i + IN_CHUNK]}}, projection).batch_size(2000)


def _previous_rescores(db: Database[dict[str, Any]], ids: list[str], everything: bool) -> dict[str, dict[str, Any]]:
    if everything:
        wanted = set(ids)
        return {str(d["_id"]): d for d in db[ANSWER_SCORES].find({}).batch_size(10_000)
                if str(d.get("session_id")) in wanted}
    return rescores_of(db, ids)


def rescore(
    db: Database[dict[str, Any]],
    settings: Settings,
    session_filter: Mapping[str, Any] | None = None,
    limit: int | None = None,
    write: bool = False,
    profile: tuple[str, int] | None = None,
    writer: BatchedWriter | None = None,
    flush_timeout: float = 60.0,
) -> RescoreResult:
    """Grade stored answers again under ``settings`` (see module docstring).

    ``session_filter`` is a query on ``sessions`` (default: all), ``limit`` keeps the most
    recent sessions. ``profile`` = (name, version) is stored with the grades when writing,
    through ``writer`` when given (see the module docstring).
    """
    if write and writer is None:
        raise ValueError("writing re-scores needs the app's writer (Store.writer): there is no direct write")
    t_start = time.perf_counter()
    prof = {"name": str(profile[0]), "version": int(profile[1])} if profile else None
    result = RescoreResult(profile=prof, transitions=_empty_transitions(),
                           speech={"fillers": 0, "pauses": 0, "pace_band": 0, "errors": 0})
    options = GradeOptions.from_settings(settings)
    speech_options = SpeechMetricsOptions.from_settings(settings)

    sessions = _select_sessions(db, session_filter, limit)
    result.sessions = len(sessions)
    plans = {
        str(s["_id"]): speech_plan(s.get("scored_thresholds") or s.get("settings"), settings) for s in sessions
    }
    projection: dict[str, Any] = {
        "session_id": 1, "index": 1, "features": 1, "grade.score": 1, "grade.band": 1,
        "metrics.wpm": 1, "metrics.has_speech": 1,
    }
    if any(p.words for p in plans.values()):
        projection.update({"words.word": 1, "words.start": 1, "words.end": 1})
    ids = list(plans)
    total = db.sessions.estimated_document_count() if session_filter or limit is not None else len(ids)
    everything = len(ids) >= FULL_SCAN_SHARE * max(1, total)

    per_session: dict[str, list[tuple[float | None, list[str]]]] = {}
    answer_ops: list[Update] = []
    now = datetime.now(UTC)
    t_read = t_score = t_speech = 0.0
    t = time.perf_counter()
    previous = _previous_rescores(db, ids, everything)
    t_read += time.perf_counter() - t
    t = time.perf_counter()
    for doc in _answers(db, ids, everything, projection):
        t_read += time.perf_counter() - t
        result.answers += 1
        sid = str(doc.get("session_id"))
        merge_rescore(doc, previous.get(str(doc["_id"])))
        stored = doc.get("grade") or {}
        features = doc.get("features")
        if not features:
            result.skipped += 1
            per_session.setdefault(sid, []).append((num(stored.get("score")), []))
            t = time.perf_counter()
            continue
        t0 = time.perf_counter()
        new = score(GradeFeatures.from_dict(features), options)
        t_score += time.perf_counter() - t0
        result.rescored += 1
        before_score, before_band = num(stored.get("score")), stored.get("band")
        result.before.append(before_score)
        result.after.append(new.score)
        b0 = before_band if before_band in BANDS else NO_BAND
        b1 = new.band if new.band in BANDS else NO_BAND
        result.transitions[b0][b1] += 1
        result.band_changes += b0 != b1
        per_session.setdefault(sid, []).append((new.score, new.flags))

        t0 = time.perf_counter()
        fields = speech_fields(doc, plans[sid], speech_options, result.speech)
        t_speech += time.perf_counter() - t0
        if write:  # dotted metrics fields: what an earlier re-score recomputed and this one did not stays
            fields.update({"session_id": sid, "grade": new.to_dict(), "profile": prof, "rescored_at": now})
            answer_ops.append(Update(ANSWER_SCORES, doc["_id"], fields, upsert=True))
        t = time.perf_counter()

    session_ops: list[Update] = []
    scored_thresholds = _json_thresholds(settings)
    for s in sessions:
        sid = str(s["_id"])
        rows = per_session.get(sid)
        if not rows:
            continue
        mean, band, flags = session_grade(rows, settings.grading.band_cutoffs)
        result.session_before.append(num(s.get("grade")))
        result.session_after.append(mean)
        result.session_band_changes += (s.get("band") or None) != band
        if write:
            session_ops.append(Update("sessions", s["_id"], {
                "grade": mean, "band": band, "flags": flags, "profile": prof,
                "scored_thresholds": scored_thresholds, "rescored_at": now,
            }))

    t0 = time.perf_counter()
    write_timings: dict[str, float] = {}
    if write and writer is not None:
        t = time.perf_counter()
        writer.update_many([*answer_ops, *session_ops])  # one journal batch: all of it or nothing
        write_timings["journal_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        result.pending = not writer.flush(flush_timeout)  # so the caller reads what it wrote
        write_timings["flush_s"] = round(time.perf_counter() - t, 3)
        result.written = True
    result.timings = {
        **write_timings,
        "read_s": round(t_read, 3),
        "score_s": round(t_score, 3),
        "speech_s": round(t_speech, 3),
        "write_s": round(time.perf_counter() - t0, 3),
        "total_s": round(time.perf_counter() - t_start, 3),
    }
    return result


def effect_figure(result: RescoreResult, bin_size: float = 0.05) -> Any:
    """Answer grade distributions before/after as an overlaid Plotly histogram (0-1)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    bins = {"start": 0.0, "end": 1.0 + 1e-9, "size": bin_size}
    for name, values, colour in (("before", result.before, "#8c99a6"), ("after", result.after, "#1f77b4")):
        fig.add_trace(go.Histogram(x=[v for v in values if v is not None], name=name, xbins=bins,
                                   marker_color=colour, opacity=0.6))
    fig.update_layout(barmode="overlay", height=320, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      xaxis_title="answer grade (0-1)", yaxis_title="answers", legend={"orientation": "h"})
    return fig
