"""Interview questions: the built-in question sets, custom questions, and their copy in MongoDB.

Built-in sets are JSON files in ``pipeline/question_sets/``, one set per file, the file named
after the set id::

    {"id", "title", "role", "description",
     "questions": [{"id", "question", "reference", "key_points", "type", "seconds"}, ...]}

``load_builtin_sets()`` reads and checks them against strict pydantic models (``_QuestionSetIn``,
``_QuestionIn``): every field present, of the right type, non-empty and within the caps below,
ids well formed and unique, text already clean (``pipeline.text.clean_text``). A bad file raises
``QuestionSetError`` naming the file, the question and the field.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
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
QuestionType = Literal["behavioural", "technical", "product", "situational", "custom"]
QUESTION_TYPES: tuple[str, ...] = get_args(QuestionType)
CUSTOM_SET_ID = "custom"

SET_FIELDS = ("id", "title", "role", "description", "questions")
QUESTION_FIELDS = ("id", "question", "reference", "key_points", "type", "seconds")

# 1-64 lower-case letters, digits, '-' or '_', starting with a letter or digit.
_Id = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


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


def _text(max_chars: int) -> Callable[[str], str]:
    """Validator of a text field: non-empty, within ``max_chars``, and already clean."""

    def check(value: str) -> str:
        if not value.strip():
            raise ValueError("field {name} must be non-empty text")
        if len(value) > max_chars:
            raise ValueError(f"field {{name}} is {len(value)} characters; the limit is {max_chars}")
        if clean_text(value, max_chars) != value:
            raise ValueError("field {name} contains markup, control characters or extra spaces; write plain text")
        return value

    return check


def _unique_in(what: str, key: Callable[[str], str]) -> Callable[[list[str]], list[str]]:
    """Validator of a list: no two items with the same ``key``."""

    def check(values: list[str]) -> list[str]:
        seen: set[str] = set()
        for v in values:
            k = key(v)
            if k in seen:
                raise ValueError(f"{what} {k!r} appears more than once")
            seen.add(k)
        return values

    return check


class _QuestionIn(BaseModel):
    """One question of a set file, as written (strict: no coercion, no unknown fields)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: _Id
    question: Annotated[str, AfterValidator(_text(MAX_QUESTION_CHARS))]
    reference: Annotated[str, AfterValidator(_text(MAX_REFERENCE_CHARS))]
    key_points: Annotated[
        list[Annotated[str, AfterValidator(_text(MAX_KEY_POINT_CHARS))]],
        Field(min_length=1, max_length=MAX_KEY_POINTS),
        AfterValidator(_unique_in("key point", str.casefold)),
    ]
    type: QuestionType
    seconds: Annotated[int, Field(ge=MIN_SECONDS, le=MAX_SECONDS)]

    def to_question(self) -> Question:
        return Question(self.id, self.question, self.reference, tuple(self.key_points), self.type, self.seconds)


class _QuestionSetIn(BaseModel):
    """One set file, as written; question ids are unique within it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: _Id
    title: Annotated[str, AfterValidator(_text(MAX_TITLE_CHARS))]
    role: Annotated[str, AfterValidator(_text(MAX_TITLE_CHARS))]
    description: Annotated[str, AfterValidator(_text(MAX_DESCRIPTION_CHARS))]
    questions: Annotated[list[_QuestionIn], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_question_ids(self) -> _QuestionSetIn:
        _unique_in("question id", str)([q.id for q in self.questions])
        return self

    def to_set(self) -> QuestionSet:
        return QuestionSet(
            self.id, self.title, self.role, self.description, tuple(q.to_question() for q in self.questions)
        )


def parse_set(data: Any, where: str) -> QuestionSet:
    """Check one set given as a mapping; ``where`` starts every error message."""
    if not isinstance(data, Mapping):
        raise QuestionSetError(f"{where}: must be a JSON object with fields {', '.join(SET_FIELDS)}")
    data = dict(data)
    try:
        return _QuestionSetIn.model_validate(data).to_set()
    except ValidationError as exc:
        raise QuestionSetError(_refusal(exc, data, where)) from None


def parse_question(data: Any, where: str) -> Question:
    """Check one question given as a mapping; ``where`` starts every error message."""
    if not isinstance(data, Mapping):
        raise QuestionSetError(f"{where}: must be an object with fields {', '.join(QUESTION_FIELDS)}")
    data = dict(data)
    if isinstance(data.get("id"), str):
        where = f"{where} (id {data['id']!r})"
    try:
        return _QuestionIn.model_validate(data).to_question()
    except ValidationError as exc:
        raise QuestionSetError(_refusal(exc, data, where, question=True)) from None


def _first(errors: list[Any], question: bool) -> Any:
    """The problem a reader meets first: the set's fields (unknown ones first), then each question
    in file order, its unknown fields first, then its fields in schema order."""

    def key(e: Any) -> tuple[Any, ...]:
        loc = tuple(e["loc"])
        inner = not question and len(loc) >= 3 and loc[0] == "questions" and isinstance(loc[1], int)
        fields = QUESTION_FIELDS if question or inner else SET_FIELDS
        rest = loc[2:] if inner else loc
        head = str(rest[0]) if rest else ""
        rank = fields.index(head) if head in fields else len(fields)
        return (inner, loc[1] if inner else 0, e["type"] != "extra_forbidden", rank, rest[1:] if rest else ())

    return min(errors, key=key)


def _refusal(exc: ValidationError, data: Mapping[str, Any], where: str, question: bool = False) -> str:
    """One clear sentence for the first problem pydantic found; ``where`` grows with the
    question (``questions[i] (id 'x')``) and the key point (``key_points[j]``)."""
    errors = exc.errors(include_url=False)
    first = _first(errors, question)
    loc = tuple(first["loc"])
    owner = QUESTION_FIELDS if question else SET_FIELDS
    if not question and len(loc) >= 2 and loc[0] == "questions" and isinstance(loc[1], int):
        where = f"{where}: questions[{loc[1]}]"
        raw = data["questions"][loc[1]]
        if isinstance(raw, Mapping) and isinstance(raw.get("id"), str):
            where = f"{where} (id {raw['id']!r})"
        if len(loc) == 2:  # the question as a whole: not an object, or a check across its fields
            if first["type"] in ("model_type", "dict_type", "model_attributes_type"):
                return f"{where}: must be an object with fields {', '.join(QUESTION_FIELDS)}"
            return f"{where}: {_message(first)}"
        loc, owner = loc[2:], QUESTION_FIELDS
    if not loc:
        return f"{where}: {_message(first)}"
    name = str(loc[0])
    if first["type"] == "extra_forbidden":
        prefix = tuple(first["loc"])[:-1]
        unknown = sorted(
            str(e["loc"][-1]) for e in errors if e["type"] == "extra_forbidden" and tuple(e["loc"])[:-1] == prefix
        )
        return f"{where}: unknown field {unknown[0]!r}; the fields are {', '.join(owner)}"
    if first["type"] == "missing":
        return f"{where}: field {name!r} is missing"
    value = first["input"]
    if name == "id":
        return f"{where}: field {name!r} is {value!r}; use 1-64 lower-case letters, digits, '-' or '_'"
    if name == "questions":
        return f"{where}: field 'questions' must be a non-empty list of questions"
    if name == "key_points":
        if len(loc) >= 2 and isinstance(loc[1], int):  # one key point
            return f"{where}: key_points[{loc[1]}]: {_text_message('key_points', first)}"
        if first["type"] in ("list_type", "too_short", "too_long"):
            return f"{where}: field 'key_points' must be a list of 1 to {MAX_KEY_POINTS} phrases"
        return f"{where}: {_message(first)}"
    if name == "type":
        return f"{where}: field 'type' is {value!r}; must be one of {', '.join(QUESTION_TYPES)}"
    if name == "seconds":
        return (
            f"{where}: field 'seconds' must be a whole number from {MIN_SECONDS} to {MAX_SECONDS}, not {value!r}"
        )
    return f"{where}: {_text_message(name, first)}"


def _message(error: Any) -> str:
    """The sentence a validator raised (``ValueError``), without pydantic's prefix."""
    cause = (error.get("ctx") or {}).get("error")
    return str(cause) if cause is not None else str(error["msg"])


def _text_message(name: str, error: Any) -> str:
    if error["type"] == "string_type":
        return f"field {name!r} must be non-empty text"
    return _message(error).format(name=repr(name))


def _unique(values: list[str], where: str, what: str) -> None:
    try:
        _unique_in(what, str)(values)
    except ValueError as exc:
        raise QuestionSetError(f"{where}: {exc}") from None


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
