"""Messages between the app process (supervisor) and the sidecar workers.

Small picklable dataclasses on multiprocessing queues; pixels never travel this way
(they go through the shared-memory ring).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.records import AnswerStart  # defined in pipeline (which never imports sidecar), sent from here

__all__ = ["AnswerEnd", "AnswerStart", "AudioChunk", "Shutdown", "WorkerEvent"]


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


@dataclass
class WorkerEvent:
    """Worker -> supervisor: ready, partial, answer_done, frame, metrics, error."""

    kind: str
    worker: str
    data: dict[str, Any] = field(default_factory=dict)
