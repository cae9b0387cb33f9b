"""Read-side queries the pages run (each backed by an index in pipeline.storage)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING

from pipeline.storage import Db

SESSION_LIST_FIELDS = {"candidate": 1, "role": 1, "started_at": 1, "status": 1, "grade": 1, "band": 1, "flags": 1}


def list_sessions(db: Db, limit: int = 50, skip: int = 0,
                  access: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The newest sessions the caller may see (``access``: see the sessions list below)."""
    cursor = (db.sessions.find(and_filters(access), SESSION_LIST_FIELDS)
              .sort("started_at", DESCENDING).skip(skip).limit(limit))
    return [{"id": str(d.pop("_id")), **d} for d in cursor]


def get_session(db: Db, session_id: str) -> dict[str, Any] | None:
    if not isinstance(session_id, str):
        return None  # never let a query parameter become an operator
    return db.sessions.find_one({"_id": session_id})


# --- re-scored grades ------------------------------------------------------------------
# A re-score (pipeline.rescore) stores its grades and the speech metrics it recomputed in
# ``answer_scores`` (one small document per answer, _id = the answer's _id) instead of
# rewriting the large answer documents (words, features): on the embedded server an update
# costs in proportion to the document's size. Readers see an answer through ``with_rescores``.
ANSWER_SCORES = "answer_scores"


def rescores_of(db: Db, session_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """answer id -> its stored re-score, for the given sessions (index by_session)."""
    ids = [str(s) for s in session_ids]
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(ids), 500):
        for doc in db[ANSWER_SCORES].find({"session_id": {"$in": ids[i : i + 500]}}).batch_size(5000):
            out[str(doc["_id"])] = doc
    return out


def merge_rescore(answer: dict[str, Any], rescore: Mapping[str, Any] | None) -> dict[str, Any]:
    """The answer as last scored: the re-score's grade, profile and metrics over the stored ones."""
    if not rescore:
        return answer
    if "grade" in rescore:
        answer["grade"] = rescore["grade"]
    if rescore.get("metrics"):
        answer["metrics"] = {**(answer.get("metrics") or {}), **rescore["metrics"]}
    for key in ("profile", "rescored_at"):
        if key in rescore:
            answer[key] = rescore[key]
    return answer


def with_rescores(db: Db, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``answers`` (modified in place) with their re-scores applied."""
    if not answers:
        return answers
    found = rescores_of(db, sorted({str(a.get("session_id")) for a in answers}))
    if found:
        for a in answers:
            merge_rescore(a, found.get(str(a.get("_id"))))
    return answers


def list_answers(db: Db, session_id: str) -> list[dict[str, Any]]:
    return with_rescores(db, list(db.answers.find({"session_id": str(session_id)}).sort("index", ASCENDING)))


# --- session report ------------------------------------------------------------------

# Only what the report draws: no box, offsets or ids (a 60-minute answer has ~27,000 frames).
FRAME_REPORT_FIELDS = {
    "_id": 0, "t": 1, "face": 1, "emotions": 1, "dominant": 1, "confidence": 1, "uncertain": 1,
    "gaze.score": 1, "gaze.eye_contact": 1, "head.movement": 1,
    # landmark face signals (absent on older frames): pipeline.frames reads each of these
    "gaze.method": 1, "gaze.yaw": 1, "gaze.pitch": 1, "head.yaw": 1, "head.pitch": 1, "head.roll": 1,
    "framing": 1, "eyes.closed": 1, "mouth.smile": 1, "mouth.smiling": 1, "too_small": 1,
}


def find_session(db: Db, session_id: object) -> dict[str, Any] | None:
    """A session by id; the id is coerced to str so a query parameter can never be an operator."""
    return db.sessions.find_one({"_id": str(session_id)})


def list_report_answers(db: Db, session_id: object) -> list[dict[str, Any]]:
    """Every answer of a session in order, whole (the report shows words, metrics and grade)."""
    return with_rescores(db, list(db.answers.find({"session_id": str(session_id)}).sort("index", ASCENDING)))


def list_answer_frames(db: Db, session_id: object, answer_id: object) -> list[dict[str, Any]]:
    """One answer's frames in time order (index by_answer_time: session_id, answer_id, t)."""
    query = {"session_id": str(session_id), "answer_id": str(answer_id)}
    return list(db.frames.find(query, FRAME_REPORT_FIELDS).sort("t", ASCENDING).batch_size(5000))


# --- sessions list (coach) -----------------------------------------------------------
#
# Every query below takes ``access``: the caller's access filter (pipeline.auth supplies it:
# a coach sees their candidates, a candidate their own sessions; None = everything). It is
# AND-ed into every sessions query, so no filter, search or sort can widen what one sees.
# User input reaches a query only as a plain value (str, datetime): search text is escaped
# with re.escape into an anchored pattern, never passed through as an operator.

PAGE_SIZE = 50
SEARCH_MAX_CHARS = 100
GRADE_BANDS = ("weak", "fair", "good", "strong")
NO_BAND = "ungraded"  # the band filter's value for sessions without a grade
SESSION_ROW_FIELDS = {
    "candidate": 1, "role": 1, "started_at": 1, "status": 1, "grade": 1, "band": 1, "flags": 1, "answer_count": 1,
}
# sort name -> [(key, its natural direction), secondary keys]; every sort ends on _id so pages
# never overlap or skip (the indexes list_by_* in pipeline.storage match these).
SESSION_SORTS: dict[str, list[tuple[str, int]]] = {
    "date": [("started_at", DESCENDING)],
    "grade": [("grade", DESCENDING), ("started_at", DESCENDING)],
    "candidate": [("candidate", ASCENDING), ("started_at", DESCENDING)],
}


@dataclass(frozen=True)
class SessionFilters:
    """What the coach asked for. Every field is optional; values are plain data, never operators."""

    candidate: str | None = None  # exact name (picked from the list of candidates)
    role: str | None = None  # exact role
    date_from: date | None = None  # inclusive, UTC day
    date_to: date | None = None  # inclusive, UTC day
    band: str | None = None  # one of GRADE_BANDS or NO_BAND
    search: str | None = None  # case-insensitive prefix of the candidate's or role's name or of a word in it


@dataclass(frozen=True)
class SessionPage:
    rows: list[dict[str, Any]]
    page: int  # 0-based
    page_size: int
    has_next: bool

    @property
    def first(self) -> int:
        """1-based position of the first row (0 when the page is empty)."""
        return self.page * self.page_size + 1 if self.rows else 0


def and_filters(*clauses: Mapping[str, Any] | None) -> dict[str, Any]:
    """The conjunction of ``clauses`` (None and {} are "no condition").

    Clauses whose top-level keys do not collide are merged into one document (equivalent
    to ``$and`` and plannable on an index by any server); otherwise they are wrapped in
    ``$and``. Either way every clause holds, so an access filter can never be widened.
    """
    parts = [dict(c) for c in clauses if c]
    merged: dict[str, Any] = {}
    for part in parts:
        if set(part) & set(merged):
            return {"$and": parts}
        merged.update(part)
    return merged


def _text(value: object, limit: int = 200) -> str | None:
    """A filter value as plain text (never a dict or list, so never an operator)."""
    if value is None:
        return None
    text = str(value).strip()[:limit]
    return text or None


def _day_start(day: date | datetime) -> datetime:
    if isinstance(day, datetime):
        return day if day.tzinfo else day.replace(tzinfo=UTC)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def search_pattern(text: object) -> str | None:
    """An anchored, escaped pattern: the text (plain, case-insensitive) at the start of the
    value or of one of its words. ``.*``, ``^(a+)+$`` or ``{"$gt": ""}`` only match themselves."""
    cleaned = _text(" ".join(str(text).split()) if text is not None else None, SEARCH_MAX_CHARS)
    if cleaned is None:
        return None
    return r"(?:^|\s)" + re.escape(cleaned)


def sessions_query(filters: SessionFilters | None = None, access: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The sessions filter document for ``filters`` AND ``access``."""
    f = filters or SessionFilters()
    clauses: list[dict[str, Any] | None] = [dict(access) if access else None]
    candidate = _text(f.candidate)
    if candidate is not None:
        clauses.append({"candidate": candidate})
    role = _text(f.role)
    if role is not None:
        clauses.append({"role": role})
    when: dict[str, Any] = {}
    if f.date_from is not None:
        when["$gte"] = _day_start(f.date_from)
    if f.date_to is not None:
        when["$lt"] = _day_start(f.date_to) + timedelta(days=1)
    if when:
        clauses.append({"started_at": when})
    band = _text(f.band)
    if band is not None:
        clauses.append({"band": None} if band == NO_BAND else {"band": band})
    pattern = search_pattern(f.search)
    if pattern is not None:
        regex = {"$regex": pattern, "$options": "i"}
        clauses.append({"$or": [{"candidate": regex}, {"role": regex}]})
    return and_filters(*clauses)


def session_sort(sort: str = "date", descending: bool = True) -> list[tuple[str, int]]:
    """The sort keys for a sort name (unknown names sort by date): the named key in the asked
    direction, then the name's secondary keys; _id breaks the remaining ties."""
    primary, *rest = SESSION_SORTS.get(sort, SESSION_SORTS["date"])
    return [(primary[0], DESCENDING if descending else ASCENDING), *rest, ("_id", ASCENDING)]


# Probing windows on the sort key (see _windows): recent sessions first, best grades first.
DATE_WINDOWS_DAYS = (31, 366)
GRADE_FLOORS = (0.8, 0.5)
WINDOW_MAX_SKIP = 500  # deeper pages go straight to the whole query (a window would rarely hold them)


def _with_lower_bound(query: Mapping[str, Any], field: str, lower: object) -> dict[str, Any] | None:
    """``query`` AND ``field >= lower``, folded into the field's own range when it has one
    (one document, so the server plans it on the field's index). None: not foldable."""
    out = dict(query)
    current = out.get(field)
    if current is None:
        out[field] = {"$gte": lower}
        return out
    if isinstance(current, Mapping) and current and set(current) <= {"$gte", "$gt", "$lt", "$lte"}:
        bound = dict(current)
        bound["$gte"] = max(bound["$gte"], lower) if "$gte" in bound else lower
        out[field] = bound
        return out
    return None


def _windows(query: dict[str, Any], sort: str, descending: bool, skip: int = 0) -> list[dict[str, Any]]:
    """Narrower queries to try first, then ``query`` itself.

    For a descending date or grade sort, every document outside ``key >= bound`` sorts
    after every document inside it (lower key, or no key), so when the window holds a
    full page past ``skip`` its first rows ARE the answer: only the window's documents
    are read, on the key's index. Queries with a top-level operator ($or from an access
    filter or a search) run once, unwindowed.
    """
    if not descending or skip > WINDOW_MAX_SKIP or any(k.startswith("$") for k in query):
        return [query]
    if sort == "date":
        now = datetime.now(UTC)
        bounds: list[tuple[str, Any]] = [("started_at", now - timedelta(days=d)) for d in DATE_WINDOWS_DAYS]
    elif sort == "grade":
        bounds = [("grade", g) for g in GRADE_FLOORS]
    else:
        return [query]
    out = [w for field, lower in bounds if (w := _with_lower_bound(query, field, lower)) is not None]
    return [*out, query]


def list_session_page(
    db: Db,
    filters: SessionFilters | None = None,
    *,
    sort: str = "date",
    descending: bool = True,
    page: int = 0,
    page_size: int = PAGE_SIZE,
    access: Mapping[str, Any] | None = None,
) -> SessionPage:
    """One page of sessions (projected to the list's columns) with each one's answer count.

    Indexed finds of page_size + 1 rows (the extra one says whether a next page exists),
    tried on a narrow window of the sort key first (see ``_windows``), plus one aggregate
    over the page's ids for the answer counts (sessions may also store ``answer_count``).
    """
    page = max(0, int(page))
    page_size = max(1, min(int(page_size), 500))
    query = sessions_query(filters, access)
    order = session_sort(sort, descending)
    docs: list[dict[str, Any]] = []
    for q in _windows(query, sort, descending, page * page_size):
        docs = list(db.sessions.find(q, SESSION_ROW_FIELDS).sort(order).skip(page * page_size).limit(page_size + 1))
        if len(docs) > page_size:
            break  # the window holds a full page: nothing outside it can come first
    has_next = len(docs) > page_size
    docs = docs[:page_size]
    missing = [str(d["_id"]) for d in docs if not isinstance(d.get("answer_count"), int)]
    counts = answer_counts(db, missing) if missing else {}
    rows = []
    for d in docs:
        sid = str(d.pop("_id"))
        stored = d.pop("answer_count", None)
        rows.append({"id": sid, **d, "answers": stored if isinstance(stored, int) else counts.get(sid, 0)})
    return SessionPage(rows, page, page_size, has_next)


def count_sessions(db: Db, filters: SessionFilters | None = None,
                   access: Mapping[str, Any] | None = None) -> int:
    return db.sessions.count_documents(sessions_query(filters, access))


def answer_counts(db: Db, session_ids: Sequence[str]) -> dict[str, int]:
    """Answers per session for a page of ids: one aggregate on the by_session index."""
    ids = [str(s) for s in session_ids]
    if not ids:
        return {}
    pipeline: list[dict[str, Any]] = [
        {"$match": {"session_id": {"$in": ids}}}, {"$group": {"_id": "$session_id", "n": {"$sum": 1}}}]
    return {str(d["_id"]): int(d["n"]) for d in db.answers.aggregate(pipeline)}


def session_filter_options(db: Db, access: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """The candidates and roles the caller may see (for the filter pickers), sorted."""
    query = and_filters(access)
    return {key: sorted(v for v in db.sessions.distinct(field, query) if isinstance(v, str) and v)
            for key, field in (("candidates", "candidate"), ("roles", "role"))}


def find_visible_session(db: Db, session_id: object, access: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """A session by id, only when ``access`` lets the caller see it."""
    return db.sessions.find_one(and_filters({"_id": str(session_id)}, access))
