"""Records and formats shared by the pipeline and the sidecar.

They live here, not in ``sidecar/``, because the flow runs one way: ``sidecar`` imports
``pipeline``, never the reverse (``sidecar.protocol`` re-exports them for its queues).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NotRequired, TypedDict

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
    # The candidate consented to keeping the raw audio: its stored copy outlives the crash-recovery
    # window (pipeline.answer_audio), so the answer can be re-analysed later with newer models.
    keep_audio: bool = False


class FrameGaze(TypedDict):
    """Where the candidate looks in one frame sample (every field None when there is no face).

    With the landmark pipeline (``mediapipe``) eye contact is the gaze direction (head pose plus the
    iris within each eye) pointing at the camera within the eye-contact thresholds; with the Haar /
    DeepFace detectors it is only the "frontal face" proxy. Never where the face sits in the frame:
    that is ``FrameSample.framing``.
    """

    eye_contact: bool | None  # None: no face, face too small, eyes closed, or not judged
    score: float | None  # 0-1, > 0.5 exactly when eye_contact is True
    eyes_found: int  # 0-2
    frontal: bool | None  # Haar proxy: two eyes, level, symmetric; landmarks: |head yaw|, |pitch| small
    method: NotRequired[str | None]  # "iris" (landmarks + iris) or "frontal-proxy" (Haar/DeepFace eyes)
    yaw: NotRequired[float | None]  # gaze direction, degrees; + = toward the image's right
    pitch: NotRequired[float | None]  # gaze direction, degrees; + = down
    iris: NotRequired[list[float] | None]  # [left, right]: iris centre along each eye line, 0-1 (0.5 centred)
    iris_fresh: NotRequired[list[bool] | None]  # [left, right]: measured on this frame (else the frame before's)
    reason: NotRequired[str | None]  # why eye_contact is None with a face: "face too small", "eyes closed", ...


class FrameHead(TypedDict):
    """Head pose and movement of one frame sample."""

    movement: float | None  # centre shift in face widths + |log size change| since the previous sample
    yaw_proxy: float | None  # Haar: (eye midpoint - box centre) * 2, + = towards image right
    pitch_proxy: float | None  # Haar: (eye line - usual eye line) * 4, + = eyes lower in the box
    yaw: NotRequired[float | None]  # degrees (solvePnP on landmarks); + = face turned toward the image's right
    pitch: NotRequired[float | None]  # degrees; + = looking down
    roll: NotRequired[float | None]  # degrees; + = head tilted clockwise in the image


class FrameFraming(TypedDict):
    """Where the face sits in the frame: a framing hint only, never eye contact."""

    offset: list[float]  # [dx, dy] face centre minus frame centre / frame size, each in [-0.5, 0.5]; + = right/down
    scale: float  # face width / frame width


class FrameEyes(TypedDict):
    """Eye openness from landmarks (eye aspect ratio: lid gap / eye width)."""

    ear: list[float]  # [left, right] in image order
    closed: bool  # mean EAR below the blink threshold


class FrameMouth(TypedDict):
    """Mouth geometry from landmarks, in inter-ocular distances."""

    smile: float  # 0-1: mouth width and corner lift against a neutral mouth
    smiling: bool  # smile above the smile threshold
    open: float  # lip gap / mouth width


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
    framing: NotRequired[FrameFraming | None]  # None without a face
    eyes: NotRequired[FrameEyes | None]  # landmark pipeline only
    mouth: NotRequired[FrameMouth | None]  # landmark pipeline only
    aligned: NotRequired[bool]  # the emotion crop was landmark-aligned (eyes level, fixed scale)
    too_small: NotRequired[bool]  # a face was found but is below the minimum size to judge gaze/expression
