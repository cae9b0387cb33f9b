"""Records and formats shared by the pipeline and the sidecar.

They live here, not in ``sidecar/``, because the flow runs one way: ``sidecar`` imports
``pipeline``, never the reverse (``sidecar.protocol`` re-exports them for its queues).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

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


class FrameGaze(TypedDict):
    """Eye-contact proxy of one frame sample (every field None when there is no face)."""

    eye_contact: bool | None  # None: no face, or a face too small to judge the eyes
    score: float | None  # 0-1: min(centring, frontality), 0.5 at the limits
    eyes_found: int  # 0-2
    frontal: bool | None  # two eyes, level, symmetric, in the upper half
    offset: list[float] | None  # [dx, dy] face centre minus frame centre / frame size, each in [-0.5, 0.5]


class FrameHead(TypedDict):
    """Head movement proxies of one frame sample."""

    movement: float | None  # centre shift in face widths + |log size change| since the previous sample
    yaw_proxy: float | None  # (eye midpoint - box centre) * 2, + = towards image right
    pitch_proxy: float | None  # (eye line - usual eye line) * 4, + = eyes lower in the box


class FrameSample(TypedDict):
    """What the emotion analyzer says about one sampled frame (JSON-able).

    With no face every face-derived field is None: never a guessed emotion.
    """

    t: float  # seconds, as given
    face: bool
    box: list[int] | None  # [x, y, w, h], original frame pixels, inside the frame
    face_confidence: float | None  # detector confidence 0-1
    emotions: dict[str, float] | None  # {angry, disgust, fear, happy, sad, surprise, neutral: prob}, sums to 1
    dominant: str | None  # label with the highest prob
    confidence: float | None  # its prob
    uncertain: bool  # confidence < emotion_confidence_floor or face < 32 px (False with no face)
    gaze: FrameGaze
    head: FrameHead
    detector: str  # detector backend name ("opencv", "mtcnn", ...)
    model: str | None  # emotion model ("fer-tflite" or "deepface")
    tracked: bool  # the box came from tracking, not a full detection
    frozen: bool  # the frame repeats the previous one (result reused)
    latency_ms: float  # time spent analysing it
