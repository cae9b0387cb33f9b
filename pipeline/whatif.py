"""The sidebar what-if: loaded answers and sessions re-scored in memory under a threshold set (grade,
band, key points covered/missed, flags; the report options that redraw advice and pause marks), and
the diff text. Pure: nothing is written; the only database access is a read of a page's answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.grading_features import GradeFeatures
from pipeline.grading_score import GradeOptions, score
from pipeline.profiles import thresholds_of
from pipeline.queries import with_rescores
from pipeline.recompute import num, session_grade
from pipeline.report import ReportOptions
from pipeline.settings import Settings
from pipeline.storage import Db

Doc = dict[str, Any]
ANSWER_GRADE_FIELDS = {"session_id": 1, "features": 1, "grade": 1}


@dataclass(frozen=True)
class GradeChange:
    """One answer's or session's grade before and after the what-if, with key-point changes."""

    before: float | None
    after: float | None
    band_before: str | None
    band_after: str | None
    newly_covered: int = 0
    newly_missed: int = 0

    @property
    def changed(self) -> bool:
        return (self.band_before != self.band_after or self.newly_covered > 0 or self.newly_missed > 0
                or _rounded(self.before) != _rounded(self.after))

    def text(self) -> str:
        """"grade 0.62 → 0.71, band fair → good, 2 key points newly covered" (only what changed)."""
        parts = []
        if _rounded(self.before) != _rounded(self.after):
            parts.append(f"grade {_fmt(self.before)} → {_fmt(self.after)}")
        if self.band_before != self.band_after:
            parts.append(f"band {self.band_before or 'none'} → {self.band_after or 'none'}")
        for n, what in ((self.newly_covered, "covered"), (self.newly_missed, "missed")):
            if n:
                parts.append(f"{n} key point{'s' if n != 1 else ''} newly {what}")
        return ", ".join(parts) if parts else "no change"


def _rounded(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def _fmt(v: float | None) -> str:
    return "none" if v is None else f"{v:.2f}"


@dataclass(frozen=True)
class SessionWhatIf:
    """One session under the what-if: its answers (copies, grade replaced), its header values, the diff."""

    session: Doc
    answers: list[Doc]
    change: GradeChange
    answer_changes: list[GradeChange] = field(default_factory=list)


def changed_values(base: Settings, values: Mapping[str, Any]) -> dict[str, Any]:
    """The thresholds in ``values`` that differ from ``base`` (what the badge counts)."""
    current = thresholds_of(base)
    out = {}
    for name, value in values.items():
        old = current.get(name)
        same = tuple(value) == tuple(old) if isinstance(value, tuple | list) and isinstance(old, tuple | list) \
            else value == old
        if not same:
            out[name] = value
    return out


def _covered(grade: Mapping[str, Any]) -> set[str]:
    return {str(m.get("key_point", "")) for m in grade.get("matched") or []}


def regrade_answer(answer: Mapping[str, Any], options: GradeOptions) -> tuple[Doc, GradeChange]:
    """A copy of ``answer`` graded under ``options`` from its stored features (no model); an answer
    without features keeps its stored grade. The stored document is not modified."""
    out = dict(answer)
    stored: Mapping[str, Any] = answer.get("grade") or {}
    features = answer.get("features")
    if not features:
        band = stored.get("band")
        s = num(stored.get("score"))
        return out, GradeChange(s, s, band, band)
    new = score(GradeFeatures.from_dict(features), options).to_dict()
    out["grade"] = new
    before, after = _covered(stored), _covered(new)
    return out, GradeChange(num(stored.get("score")), num(new.get("score")), stored.get("band"), new.get("band"),
                            newly_covered=len(after - before), newly_missed=len(before - after))


def whatif_session(session: Mapping[str, Any], answers: Sequence[Mapping[str, Any]], settings: Settings,
                   options: GradeOptions | None = None) -> SessionWhatIf:
    """The session and its answers as the report shows them under ``settings``, and the diff
    against what is stored. Session grade = mean of graded answers, band from the new cut-offs,
    flags = union of the answers' grade flags (as pipeline.interview.summarise and rescore)."""
    opts = options or GradeOptions.from_settings(settings)
    new_answers: list[Doc] = []
    changes: list[GradeChange] = []
    rows: list[tuple[float | None, list[str]]] = []
    for a in answers:
        doc, change = regrade_answer(a, opts)
        new_answers.append(doc)
        changes.append(change)
        grade = doc.get("grade") or {}
        rows.append((num(grade.get("score")), [str(f) for f in grade.get("flags") or []]))
    new_session = dict(session)
    if any(a.get("features") for a in answers):
        mean, band, flags = session_grade(rows, settings.grading.band_cutoffs)
        new_session.update({"grade": mean, "band": band, "flags": flags})
    change = GradeChange(num(session.get("grade")), num(new_session.get("grade")), session.get("band"),
                         new_session.get("band"), newly_covered=sum(c.newly_covered for c in changes),
                         newly_missed=sum(c.newly_missed for c in changes))
    return SessionWhatIf(new_session, new_answers, change, changes)


def whatif_report_options(settings: Settings, session_settings: Mapping[str, Any] | None,
                          emotion_enabled: bool | None = None) -> ReportOptions:
    """The options the report's cards and timelines use under ``settings`` (pause marks, fillers,
    pace band, advice), with the page's emotion toggle kept."""
    opts = ReportOptions.from_settings(settings, session_settings)
    if emotion_enabled is not None and opts.emotion_enabled != emotion_enabled:
        opts = replace(opts, emotion_enabled=emotion_enabled and opts.emotion_enabled)
    return opts


def page_answers(db: Db, session_ids: Sequence[str]) -> dict[str, list[Doc]]:
    """session id -> its answers' stored features and grade (as last re-scored): a read for the
    sessions list's what-if. One ``$in`` query on answers (index by_session) and one on the re-scores."""
    ids = [str(s) for s in session_ids]
    out: dict[str, list[Doc]] = {i: [] for i in ids}
    if not ids:
        return out
    for doc in with_rescores(db, list(db.answers.find({"session_id": {"$in": ids}}, ANSWER_GRADE_FIELDS))):
        out.setdefault(str(doc.get("session_id")), []).append(doc)
    return out


def whatif_rows(rows: Sequence[Mapping[str, Any]], answers: Mapping[str, Sequence[Mapping[str, Any]]],
                settings: Settings) -> list[tuple[Doc, GradeChange]]:
    """The sessions list's rows (``id``, ``grade``, ``band``, ``flags``) re-graded under ``settings``."""
    opts = GradeOptions.from_settings(settings)
    out = []
    for row in rows:
        result = whatif_session(row, answers.get(str(row.get("id")), []), settings, opts)
        out.append((result.session, result.change))
    return out
