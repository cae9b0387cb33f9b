"""Records and formats shared by the pipeline and the sidecar.

They live here, not in ``sidecar/``, because the flow runs one way: ``sidecar`` imports
``pipeline``, never the reverse (``sidecar.protocol`` re-exports them for its queues).
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_RATE = 16000  # Hz: every speech path (decode, ASR, metrics, prosody) runs on 16 kHz mono float32


@dataclass(frozen=True)
class AnswerStart:
    """One answer about to be recorded: what the workers need to transcribe and grade it."""

    session_id: str
    answer_id: str
    index: int
    question: str
    reference: str = ""
    key_points: tuple[str, ...] = ()
    started_ms: int = 0
    hotwords: tuple[str, ...] = ()
