"""The question-set schema: ``Question`` / ``QuestionSet`` records, the caps, and the strict
pydantic models a set file is checked against, with one clear refusal message per problem."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.text import clean_text

MAX_QUESTION_CHARS = 500
MAX_REFERENCE_CHARS = 3_000
MAX_KEY_POINT_CHARS = 200
MAX_KEY_POINTS = 10
MAX_TITLE_CHARS = 200  # set title and role
MAX_DESCRIPTION_CHARS = 1_000
MIN_SECONDS, MAX_SECONDS, DEFAULT_SECONDS = 15, 600, 120
QuestionType = Literal["behavioural", "technical", "product", "situational", "custom"]
QUESTION_TYPES: tuple[str, ...] = get_args(QuestionType)

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


def require_unique(values: list[str], where: str, what: str) -> None:
    """``QuestionSetError`` naming the first value that appears twice."""
    try:
        _unique_in(what, str)(values)
    except ValueError as exc:
        raise QuestionSetError(f"{where}: {exc}") from None
