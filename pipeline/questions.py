"""Interview questions: the built-in question sets, custom questions, and their copy in MongoDB.

Built-in sets are JSON files in ``pipeline/question_sets/``, one set per file, the file named
after the set id::

    {"id", "title", "role", "description",
     "questions": [{"id", "question", "reference", "key_points", "type", "seconds"}, ...]}

``load_builtin_sets()`` reads and checks them: every field present, of the right type, non-empty
and within the caps below, ids well formed and unique, text already clean (see ``clean_text``).
A bad file raises ``QuestionSetError`` naming the file, the question and the field.

``custom_question()`` builds a ``Question`` from text a user typed: HTML, control characters and
markdown links are removed and lengths capped; an empty question is refused with ``ValueError``.

``sync_to_db(db)`` copies the sets into the ``questions`` collection, one document per question
(``_id`` = ``"{set_id}:{question_id}"``), with ``ReplaceOne`` upserts in one unordered
``bulk_write``: running it again changes nothing. ``sets_from_db(db)`` reads them back, sorted on
the ``by_set`` index (``set_id``, ``order``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, ReplaceOne
from pymongo.database import Database

from pipeline.storage import INDEXES
from pipeline.text import clean_text

log = logging.getLogger(__name__)

SETS_DIR = Path(__file__).with_name("question_sets")
COLLECTION = "questions"

MAX_QUESTION_CHARS = 500
MAX_REFERENCE_CHARS = 3_000
MAX_KEY_POINT_CHARS = 200
MAX_KEY_POINTS = 10
MAX_TITLE_CHARS = 200  # set title and role
MAX_DESCRIPTION_CHARS = 1_000
MIN_SECONDS, MAX_SECONDS, DEFAULT_SECONDS = 15, 600, 120
QUESTION_TYPES = ("behavioural", "technical", "product", "situational", "custom")
CUSTOM_SET_ID = "custom"

SET_FIELDS = ("id", "title", "role", "description", "questions")
QUESTION_FIELDS = ("id", "question", "reference", "key_points", "type", "seconds")

_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class QuestionSetError(ValueError):
    """A question set (file or database document) is malformed; the message says where and why."""


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    reference: str
    key_points: tuple[str, ...]
    type: str
    seconds: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "reference": self.reference,
            "key_points": list(self.key_points),
            "type": self.type,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class QuestionSet:
    id: str
    title: str
    role: str
    description: str
    questions: tuple[Question, ...]

    def question(self, question_id: str) -> Question:
        for q in self.questions:
            if q.id == question_id:
                return q
        raise KeyError(f"question set {self.id!r} has no question {question_id!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "role": self.role,
            "description": self.description,
            "questions": [q.to_dict() for q in self.questions],
        }


# --- custom questions ------------------------------------------------------------------------


def custom_question(
    question: Any, reference: Any, key_points: Any, *, seconds: Any = DEFAULT_SECONDS
) -> Question:
    """A ``Question`` from user-typed text, cleaned and capped.

    Caps: question 500 characters, reference 3,000, each key point 200, at most 10 key points
    (extra ones are dropped; blank and repeated ones too). ``key_points`` may be a list of
    strings or one string with a key point per line. ``seconds`` is clamped to 15-600.
    Raises ``ValueError`` when the question is empty after cleaning or a value is not text.
    """
    q = clean_text(question, MAX_QUESTION_CHARS, field="question")
    if not q:
        raise ValueError("the question is empty: type the question you want to be asked")
    ref = clean_text(reference, MAX_REFERENCE_CHARS, field="reference")
    if key_points is None:
        raw: Iterable[Any] = ()
    elif isinstance(key_points, str):
        raw = key_points[: MAX_KEY_POINTS * MAX_KEY_POINT_CHARS * 4].splitlines()
    elif isinstance(key_points, list | tuple):
        raw = key_points
    else:
        raise ValueError(f"key points must be a list of text lines, not {type(key_points).__name__}")
    kps: list[str] = []
    seen: set[str] = set()
    for i, item in enumerate(itertools.islice(raw, MAX_KEY_POINTS * 10)):
        kp = clean_text(item, MAX_KEY_POINT_CHARS, field=f"key point {i + 1}")
        if kp and kp.casefold() not in seen:
            seen.add(kp.casefold())
            kps.append(kp)
        if len(kps) == MAX_KEY_POINTS:
            break
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds != seconds:
        raise ValueError(f"seconds must be a number, not {seconds!r}"[:200])
    secs = int(min(max(seconds, MIN_SECONDS), MAX_SECONDS))
    digest = hashlib.sha256("\x00".join([q, ref, *kps]).encode()).hexdigest()[:12]
    return Question(f"custom-{digest}", q, ref, tuple(kps), "custom", secs)


# --- built-in sets ---------------------------------------------------------------------------


def load_builtin_sets(directory: Path | None = None) -> list[QuestionSet]:
    """Every ``*.json`` set in ``directory`` (default: the shipped sets), sorted by set id."""
    if directory is None:
        return list(_builtin_sets())
    return list(_load_dir(Path(directory)))


@lru_cache(maxsize=1)
def _builtin_sets() -> tuple[QuestionSet, ...]:
    return _load_dir(SETS_DIR)


def _load_dir(directory: Path) -> tuple[QuestionSet, ...]:
    files = sorted(directory.glob("*.json"))
    if not files:
        raise QuestionSetError(f"no question set files (*.json) in {directory}")
    sets = [load_set_file(path) for path in files]
    _unique([s.id for s in sets], f"question sets in {directory}", "set id")
    return tuple(sets)


def load_set_file(path: Path) -> QuestionSet:
    """One set file, checked; ``QuestionSetError`` names the file and the field otherwise."""
    where = f"question set file {path.name}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise QuestionSetError(f"{where}: cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise QuestionSetError(f"{where}: not UTF-8 text: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise QuestionSetError(f"{where}: not valid JSON: {exc.msg} at line {exc.lineno}") from None
    qset = parse_set(data, where)
    if qset.id != path.stem:
        raise QuestionSetError(
            f"{where}: field 'id' is {qset.id!r} but must match the file name {path.stem!r}"
        )
    return qset


def parse_set(data: Any, where: str) -> QuestionSet:
    """Check one set given as a mapping; ``where`` starts every error message."""
    if not isinstance(data, Mapping):
        raise QuestionSetError(f"{where}: must be a JSON object with fields {', '.join(SET_FIELDS)}")
    _known_fields(data, SET_FIELDS, where)
    set_id = _id_field(data, "id", where)
    title = _text_field(data, "title", MAX_TITLE_CHARS, where)
    role = _text_field(data, "role", MAX_TITLE_CHARS, where)
    description = _text_field(data, "description", MAX_DESCRIPTION_CHARS, where)
    raw = _field(data, "questions", where)
    if not isinstance(raw, list) or not raw:
        raise QuestionSetError(f"{where}: field 'questions' must be a non-empty list of questions")
    questions = tuple(parse_question(q, f"{where}: questions[{i}]") for i, q in enumerate(raw))
    _unique([q.id for q in questions], where, "question id")
    return QuestionSet(set_id, title, role, description, questions)


def parse_question(data: Any, where: str) -> Question:
    """Check one question given as a mapping; ``where`` starts every error message."""
    if not isinstance(data, Mapping):
        raise QuestionSetError(f"{where}: must be an object with fields {', '.join(QUESTION_FIELDS)}")
    if isinstance(data.get("id"), str):
        where = f"{where} (id {data['id']!r})"
    _known_fields(data, QUESTION_FIELDS, where)
    qid = _id_field(data, "id", where)
    question = _text_field(data, "question", MAX_QUESTION_CHARS, where)
    reference = _text_field(data, "reference", MAX_REFERENCE_CHARS, where)
    kps = _field(data, "key_points", where)
    if not isinstance(kps, list) or not kps or len(kps) > MAX_KEY_POINTS:
        raise QuestionSetError(f"{where}: field 'key_points' must be a list of 1 to {MAX_KEY_POINTS} phrases")
    key_points = tuple(
        _text_field({"key_points": kp}, "key_points", MAX_KEY_POINT_CHARS, f"{where}: key_points[{i}]")
        for i, kp in enumerate(kps)
    )
    _unique([k.casefold() for k in key_points], where, "key point")
    qtype = _field(data, "type", where)
    if qtype not in QUESTION_TYPES:
        raise QuestionSetError(
            f"{where}: field 'type' is {qtype!r}; must be one of {', '.join(QUESTION_TYPES)}"
        )
    seconds = _field(data, "seconds", where)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise QuestionSetError(
            f"{where}: field 'seconds' must be a whole number from {MIN_SECONDS} to {MAX_SECONDS}, not {seconds!r}"
        )
    return Question(qid, question, reference, key_points, qtype, seconds)


def _field(data: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in data:
        raise QuestionSetError(f"{where}: field {name!r} is missing")
    return data[name]


def _known_fields(data: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise QuestionSetError(f"{where}: unknown field {unknown[0]!r}; the fields are {', '.join(allowed)}")


def _text_field(data: Mapping[str, Any], name: str, max_chars: int, where: str) -> str:
    value = _field(data, name, where)
    if not isinstance(value, str) or not value.strip():
        raise QuestionSetError(f"{where}: field {name!r} must be non-empty text")
    if len(value) > max_chars:
        raise QuestionSetError(
            f"{where}: field {name!r} is {len(value)} characters; the limit is {max_chars}"
        )
    if clean_text(value, max_chars) != value:
        raise QuestionSetError(
            f"{where}: field {name!r} contains markup, control characters or extra spaces; write plain text"
        )
    return value


def _id_field(data: Mapping[str, Any], name: str, where: str) -> str:
    value = _field(data, name, where)
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise QuestionSetError(
            f"{where}: field {name!r} is {value!r}; use 1-64 lower-case letters, digits, '-' or '_'"
        )
    return value


def _unique(values: list[str], where: str, what: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise QuestionSetError(f"{where}: {what} {v!r} appears more than once")
        seen.add(v)


# --- database --------------------------------------------------------------------------------


def question_doc(qset: QuestionSet, order: int, q: Question) -> dict[str, Any]:
    """The ``questions`` collection document for question ``order`` of ``qset``."""
    return {
        "_id": f"{qset.id}:{q.id}",
        "set_id": qset.id,
        "order": order,
        "set_title": qset.title,
        "set_description": qset.description,
        "role": qset.role,
        "question": q.question,
        "reference": q.reference,
        "key_points": list(q.key_points),
        "type": q.type,
        "seconds": q.seconds,
    }


def sync_to_db(db: Database, sets: Iterable[QuestionSet] | None = None) -> int:
    """Upsert ``sets`` (default: the built-in ones) into ``questions``; returns the question count.

    Idempotent: each question is a ``ReplaceOne`` upsert on its ``_id``. Questions that a synced
    set no longer has are deleted, so the collection matches the files afterwards.
    """
    sets = list(load_builtin_sets() if sets is None else sets)
    coll = db[COLLECTION]
    coll.create_indexes(INDEXES[COLLECTION])
    docs = [question_doc(s, order, q) for s in sets for order, q in enumerate(s.questions)]
    if docs:
        coll.bulk_write([ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs], ordered=False)
    if sets:
        coll.delete_many({"set_id": {"$in": [s.id for s in sets]}, "_id": {"$nin": [d["_id"] for d in docs]}})
    return len(docs)


def sets_from_db(db: Database, set_ids: Iterable[str] | None = None) -> list[QuestionSet]:
    """The sets stored in ``questions`` (all, or those in ``set_ids``), sorted by set id.

    A malformed document is skipped with a warning rather than hiding every other set.
    """
    query: dict[str, Any] = {}
    if set_ids is not None:
        query["set_id"] = {"$in": [str(s) for s in set_ids]}
    cursor = db[COLLECTION].find(query).sort([("set_id", ASCENDING), ("order", ASCENDING)])
    out: list[QuestionSet] = []
    header: tuple[str, str, str, str] | None = None
    questions: list[Question] = []

    def close_set() -> None:
        if header is not None and questions:
            out.append(QuestionSet(*header, tuple(questions)))

    for doc in cursor:
        try:
            set_id, q = _question_from_doc(doc)
        except QuestionSetError as exc:
            log.warning("skipping stored question: %s", exc)
            continue
        if header is None or header[0] != set_id:
            close_set()
            header = (
                set_id,
                str(doc.get("set_title", "")),
                str(doc.get("role", "")),
                str(doc.get("set_description", "")),
            )
            questions = []
        questions.append(q)
    close_set()
    return out


def _question_from_doc(doc: Mapping[str, Any]) -> tuple[str, Question]:
    doc_id = doc.get("_id")
    where = f"questions document {str(doc_id)[:100]!r}"
    set_id = doc.get("set_id")
    if not isinstance(doc_id, str) or not isinstance(set_id, str) or not doc_id.startswith(f"{set_id}:"):
        raise QuestionSetError(f"{where}: _id must be '<set_id>:<question id>' for set_id {set_id!r}")
    fields = {k: doc.get(k) for k in QUESTION_FIELDS if k in doc and k != "id"}
    fields["id"] = doc_id[len(set_id) + 1 :]
    return set_id, parse_question(fields, where)
