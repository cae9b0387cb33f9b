"""Messages between the app process (supervisor) and the sidecar workers.

Small picklable dataclasses on multiprocessing queues; pixels never travel this way
(they go through the shared-memory ring), and neither do live frame samples (MongoDB has them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from pipeline.records import AnswerStart  # defined in pipeline (which never imports sidecar), sent from here

__all__ = [
    "AnswerDone", "AnswerEnd", "AnswerSaved", "AnswerStart", "AnswerSummary", "AudioChunk", "FaceStatus",
    "CollectedFrame", "FramesFlushed", "PartialWords", "Ready", "Shutdown", "WorkerError", "WorkerEvent",
    "WorkerMetrics",
]


# ---------------------------------------------------------------------- app -> speech worker
@dataclass(frozen=True)
class AudioChunk:
    answer_id: str
    t_ms: int  # epoch ms of the first sample on the capture clock
    samples: np.ndarray  # 16 kHz mono float32


@dataclass(frozen=True)
class AnswerEnd:
    answer_id: str
    ended_ms: int
    status: str = "complete"  # or "incomplete" (connection dropped, tab closed)
    capture: dict[str, Any] | None = None  # callback counters and timings, stored with the answer


@dataclass(frozen=True)
class Shutdown:
    pass


# ---------------------------------------------------------------------- workers -> app
class AnswerSummary(TypedDict, total=False):
    """What the speech worker computed for one answer (the fields it stores), plus how storing went."""

    answer_id: str
    session_id: str
    stored: bool  # written to MongoDB (the writer flushed it)
    held: bool  # the journal refused it: held in the worker's memory, written later (AnswerSaved)
    journal_full: bool
    journal_error: str | None
    timings: dict[str, float]
    status: str
    ended_ms: int
    transcript: str
    words: list[dict[str, Any]]
    metrics: dict[str, Any]
    grade: dict[str, Any] | None
    features: dict[str, Any]
    star: dict[str, Any] | None  # STAR structure (behavioural questions only; pipeline.star)
    asr: dict[str, Any]
    audio_started_ms: int | None
    audio_seconds: float
    capture: dict[str, Any]
    error: str  # set by the app (e.g. the analysis did not finish in time), never by the worker


@dataclass(frozen=True)
class Ready:
    worker: str
    timings: dict[str, Any]
    total_s: float


@dataclass(frozen=True)
class WorkerMetrics:
    """Stage latencies and journal backlog counters, about once a second."""

    worker: str
    data: dict[str, Any]


@dataclass(frozen=True)
class WorkerError:
    worker: str
    error: str
    answer_id: str | None = None
    trace: str | None = None


@dataclass(frozen=True)
class PartialWords:
    """Words the speech worker committed while the candidate speaks (the live transcript)."""

    answer_id: str
    words: list[dict[str, Any]]
    worker: str = "speech"


@dataclass(frozen=True)
class AnswerDone:
    """The per-answer summary: sent once, when the speech worker has graded and stored an answer."""

    summary: AnswerSummary
    worker: str = "speech"

    @property
    def answer_id(self) -> str:
        return self.summary["answer_id"]


@dataclass(frozen=True)
class AnswerSaved:
    """An answer the full journal had refused (``held``) is journaled now."""

    answer_id: str
    session_id: str
    stored: bool
    worker: str = "speech"


@dataclass(frozen=True)
class FaceStatus:
    """The latest face status of one session, for the live panel (not every frame: on a change or
    at most every ``FACE_STATUS_EVERY_S``)."""

    session_id: str
    answer_id: str
    t_ms: int
    face: bool
    luma: float
    worker: str = "emotion"


@dataclass(frozen=True)
class CollectedFrame:
    """One analysed frame, sent only for frames put with ``collect`` (offline analysis of a file,
    whose report lists every frame); a live answer's frames go to MongoDB only."""

    record: dict[str, Any]  # the ``frames`` document (pipeline.schemas.FrameDoc fields)
    worker: str = "emotion"

    @property
    def answer_id(self) -> str:
        return str(self.record["answer_id"])


@dataclass(frozen=True)
class FramesFlushed:
    """Every frame of the answer put before the flush marker is analysed and, when ``stored``,
    written to MongoDB (False: storing is off, or the database or journal is not taking writes)."""

    answer_id: str
    stored: bool
    analysed: int  # frame samples of this answer the worker analysed
    worker: str = "emotion"


WorkerEvent = (Ready | WorkerMetrics | WorkerError | PartialWords | AnswerDone | AnswerSaved | FaceStatus
               | CollectedFrame | FramesFlushed)
