"""Document shapes for every collection, checked on the way in.

A bad document is refused whole with an ``InvalidDocumentError`` naming the collection
and the offending fields; nothing is half-written. Field names follow DESIGN.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
MAX_TEXT = 20_000  # a minute of fast speech is ~1,000 characters; anything far beyond is hostile


class InvalidDocumentError(ValueError):
    def __init__(self, collection: str, detail: str) -> None:
        super().__init__(f"refused {collection} document: {detail}")
        self.collection = collection
        self.detail = detail


class _Doc(BaseModel):
    # Unknown fields are kept (forward compatible); known ones are typed and ranged.
    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)
    id: str = Field(alias="_id", min_length=1, max_length=200)


class Word(BaseModel):
    model_config = ConfigDict(extra="allow")
    word: str = Field(max_length=200)
    start: float = Field(ge=0)
    end: float = Field(ge=0)
    probability: float | None = Field(default=None, ge=0, le=1)


class SessionDoc(_Doc):
    candidate: str = Field(min_length=1, max_length=200)
    role: str = Field(default="custom", max_length=200)
    question_set: str | None = Field(default=None, max_length=200)
    coach: str | None = Field(default=None, max_length=200)
    started_at: datetime
    ended_at: datetime | None = None
    status: Literal["recording", "complete", "incomplete", "analysed", "failed"] = "recording"
    source: Literal["live", "upload", "cli", "import"] = "live"
    settings: dict[str, Any] = Field(default_factory=dict)
    grade: float | None = Field(default=None, ge=0, le=1)
    band: str | None = None
    flags: list[str] = Field(default_factory=list)


class AnswerDoc(_Doc):
    session_id: str = Field(min_length=1, max_length=200)
    index: int = Field(ge=0)
    question: str = Field(min_length=1, max_length=MAX_TEXT)
    reference: str = Field(default="", max_length=MAX_TEXT)
    key_points: list[str] = Field(default_factory=list)
    status: Literal["recording", "transcribing", "complete", "incomplete", "failed"] = "recording"
    started_ms: int | None = Field(default=None, ge=0)
    ended_ms: int | None = Field(default=None, ge=0)
    transcript: str = Field(default="", max_length=MAX_TEXT * 5)
    words: list[Word] = Field(default_factory=list)
    metrics: dict[str, Any] | None = None
    grade: dict[str, Any] | None = None
    features: dict[str, Any] | None = None
    error: str | None = Field(default=None, max_length=MAX_TEXT)


class FrameDoc(_Doc):
    session_id: str = Field(min_length=1, max_length=200)
    answer_id: str = Field(min_length=1, max_length=200)
    t: int = Field(ge=0, description="epoch milliseconds on the capture clock")
    face: bool
    box: list[int] | None = None
    emotions: dict[str, float] | None = None
    dominant: str | None = None
    confidence: float | None = Field(default=None, ge=0, le=1)
    gaze: dict[str, Any] | None = None
    head: dict[str, Any] | None = None
    luma: float | None = Field(default=None, ge=0, le=255)

    @field_validator("box")
    @classmethod
    def _box(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(v) != 4 or v[2] <= 0 or v[3] <= 0):
            raise ValueError("box must be [x, y, w, h] with positive size")
        return v

    @field_validator("emotions")
    @classmethod
    def _emotions(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if set(v) - set(EMOTIONS):
            raise ValueError(f"unknown emotion labels {sorted(set(v) - set(EMOTIONS))}")
        if any(not 0.0 <= p <= 1.0 for p in v.values()):
            raise ValueError("emotion probabilities must lie in [0, 1]")
        return v

    @field_validator("dominant")
    @classmethod
    def _dominant(cls, v: str | None) -> str | None:
        if v is not None and v not in EMOTIONS:
            raise ValueError(f"unknown dominant emotion {v!r}")
        return v


class ProfileDoc(_Doc):
    name: str = Field(min_length=1, max_length=100)
    version: int = Field(ge=1)
    thresholds: dict[str, Any]
    created_at: datetime
    author: str | None = Field(default=None, max_length=200)


class AnswerAudioDoc(_Doc):
    """One open answer's start, a chunk of its audio (16-bit PCM) or its end (pipeline/answer_audio.py)."""

    kind: Literal["start", "audio", "end"]
    answer_id: str = Field(min_length=1, max_length=200)
    session_id: str = Field(min_length=1, max_length=200)
    node: str = Field(min_length=1, max_length=200)
    written_at: datetime
    expires_at: datetime | None = None  # None: kept (the candidate consented), else removed then
    seq: int | None = Field(default=None, ge=0)
    t_ms: int | None = Field(default=None, ge=0)
    rate: int | None = Field(default=None, ge=8000, le=48000)
    pcm: bytes | None = Field(default=None, max_length=4 * 16000 * 2)  # <= 4 s at 16 kHz: 2x a chunk
    start: dict[str, Any] | None = None
    ended_ms: int | None = Field(default=None, ge=0)
    status: Literal["complete", "incomplete"] | None = None


SCHEMAS: dict[str, type[_Doc]] = {
    "sessions": SessionDoc,
    "answers": AnswerDoc,
    "frames": FrameDoc,
    "profiles": ProfileDoc,
    "answer_audio": AnswerAudioDoc,
}


def validate(collection: str, doc: dict[str, Any]) -> dict[str, Any]:
    """Check a whole document; return it unchanged or raise InvalidDocumentError."""
    schema = SCHEMAS.get(collection)
    if schema is None:
        if "_id" not in doc:
            raise InvalidDocumentError(collection, "missing _id")
        return doc
    try:
        schema.model_validate(doc)
    except ValidationError as exc:
        raise InvalidDocumentError(collection, _summarise(exc)) from None
    return doc


def validate_fields(collection: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Check the fields of a partial update against the collection's schema."""
    schema = SCHEMAS.get(collection)
    if schema is None:
        return fields
    problems = []
    for key, value in fields.items():
        name = key.split(".", 1)[0]
        info = schema.model_fields.get(name)
        if name in ("_id", "id"):
            problems.append("_id cannot be updated")
        elif info is not None and "." not in key:
            try:
                # An empty instance on purpose: only this one field is checked, the document is not whole.
                empty = schema.model_construct()  # type: ignore[call-arg]
                schema.__pydantic_validator__.validate_assignment(empty, name, value)
            except ValidationError as exc:
                problems.append(_summarise(exc))
    if problems:
        raise InvalidDocumentError(collection, "; ".join(problems))
    return fields


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "document"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
