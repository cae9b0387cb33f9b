"""Interview questions: the built-in question sets, custom questions, and their copy in MongoDB.

Built-in sets are JSON files in ``pipeline/question_sets/``, one set per file, the file named
after the set id::

    {"id", "title", "role", "description",
     "questions": [{"id", "question", "reference", "key_points", "type", "seconds"}, ...]}

``load_builtin_sets()`` reads and checks them against the strict pydantic models of
``pipeline.question_schema``: every field present, of the right type, non-empty and within its
caps, ids well formed and unique, text already clean (``pipeline.text.clean_text``). A bad file
raises ``QuestionSetError`` naming the file, the question and the field.

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
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, ReplaceOne
from pymongo.database import Database

from pipeline.question_schema import (
    DEFAULT_SECONDS,
    MAX_DESCRIPTION_CHARS,
    MAX_KEY_POINT_CHARS,
    MAX_KEY_POINTS,
    MAX_QUESTION_CHARS,
    MAX_REFERENCE_CHARS,
    MAX_SECONDS,
    MAX_TITLE_CHARS,
    MIN_SECONDS,
    QUESTION_FIELDS,
    QUESTION_TYPES,
    SET_FIELDS,
    Question,
    QuestionSet,
    QuestionSetError,
    QuestionType,
    parse_question,
    parse_set,
    require_unique,
)
from pipeline.storage import INDEXES
from pipeline.text import clean_text

log = logging.getLogger(__name__)

SETS_DIR = Path(__file__).with_name("question_sets")
COLLECTION = "questions"
CUSTOM_SET_ID = "custom"

__all__ = [
    "COLLECTION",
    "CUSTOM_SET_ID",
    "DEFAULT_SECONDS",
    "MAX_DESCRIPTION_CHARS",
    "MAX_KEY_POINTS",
    "MAX_KEY_POINT_CHARS",
    "MAX_QUESTION_CHARS",
    "MAX_REFERENCE_CHARS",
    "MAX_SECONDS",
    "MAX_TITLE_CHARS",
    "MIN_SECONDS",
    "QUESTION_FIELDS",
    "QUESTION_TYPES",
    "SETS_DIR",
    "SET_FIELDS",
    "Question",
    "QuestionSet",
    "QuestionSetError",
    "QuestionType",
    "clean_text",
    "custom_question",
    "load_builtin_sets",
    "load_set_file",
    "parse_question",
    "parse_set",
    "question_doc",
    "sets_from_db",
    "sync_to_db",
]


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
    require_unique([s.id for s in sets], f"question sets in {directory}", "set id")
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


def sync_to_db(db: Database[dict[str, Any]], sets: Iterable[QuestionSet] | None = None) -> int:
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


def sets_from_db(db: Database[dict[str, Any]], set_ids: Iterable[str] | None = None) -> list[QuestionSet]:
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
