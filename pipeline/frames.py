"""Frame samples as columns (sorted, NaN where missing) and their per-answer summary
(face share, eye contact, mean emotion), read from the stored frame documents."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from pipeline.axis import Doc, num
from pipeline.schemas import EMOTIONS


class FrameSummary(TypedDict):
    """What the card needs of an answer's frames; every face-derived value is None without a face."""

    frames: int
    face_frames: int
    face_ratio: float | None
    eye_contact_frames: int
    eye_contact_ratio: float | None
    emotion_frames: int
    emotion_means: dict[str, float] | None
    dominant: str | None
    dominant_probability: float | None
    mean_confidence: float | None
    uncertain_ratio: float | None


@dataclass(frozen=True)
class FrameArrays:
    """Frame documents as columns, sorted by time; NaN where a value is missing."""

    t_ms: np.ndarray  # float64 epoch ms
    face: np.ndarray  # bool
    emotions: np.ndarray  # (n, 7) in EMOTIONS order; NaN rows without a face or emotions
    confidence: np.ndarray
    uncertain: np.ndarray  # bool
    gaze_score: np.ndarray
    eye_contact: np.ndarray  # 1.0 / 0.0 / NaN (not measured)
    movement: np.ndarray

    def __len__(self) -> int:
        return len(self.t_ms)


def frame_arrays(frames: Sequence[Doc] | FrameArrays) -> FrameArrays:
    if isinstance(frames, FrameArrays):
        return frames
    n = len(frames)
    nan = np.nan
    t = np.full(n, nan)
    face = np.zeros(n, bool)
    emo = np.full((n, len(EMOTIONS)), nan)
    conf = np.full(n, nan)
    unc = np.zeros(n, bool)
    score = np.full(n, nan)
    eye = np.full(n, nan)
    move = np.full(n, nan)
    for i, f in enumerate(frames):
        ti = num(f.get("t"))
        t[i] = nan if ti is None else ti
        if not f.get("face"):
            continue  # no face: every face-derived value stays missing
        face[i] = True
        e = f.get("emotions")
        if e:
            emo[i] = [float(e.get(k) or 0.0) for k in EMOTIONS]
            c = f.get("confidence")
            conf[i] = float(c) if c is not None else nan
        unc[i] = bool(f.get("uncertain"))
        g = f.get("gaze") or {}
        if g.get("score") is not None:
            score[i] = float(g["score"])
        if g.get("eye_contact") is not None:
            eye[i] = 1.0 if g["eye_contact"] else 0.0
        h = f.get("head") or {}
        if h.get("movement") is not None:
            move[i] = float(h["movement"])
    keep = ~np.isnan(t)
    order = np.argsort(t[keep], kind="stable")
    sel = np.flatnonzero(keep)[order]
    return FrameArrays(t[sel], face[sel], emo[sel], conf[sel], unc[sel], score[sel], eye[sel], move[sel])


def _mean(a: np.ndarray) -> float | None:
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else None


def frame_summary(frames: Sequence[Doc] | FrameArrays) -> FrameSummary:
    """Share of frames with a face and with eye contact, mean emotion over face frames.

    Every value that needs a face is None when no frame had one (never 0).
    """
    fa = frame_arrays(frames)
    n = len(fa)
    k = int(fa.face.sum())
    measured = ~np.isnan(fa.eye_contact)
    has_emotion = ~np.isnan(fa.emotions[:, 0])
    means = None
    dominant = None
    if has_emotion.any():
        m = fa.emotions[has_emotion].mean(axis=0)
        means = {e: round(float(v), 4) for e, v in zip(EMOTIONS, m, strict=True)}
        dominant = EMOTIONS[int(np.argmax(m))]
    return {
        "frames": n,
        "face_frames": k,
        "face_ratio": k / n if n else None,
        "eye_contact_frames": int(measured.sum()),
        "eye_contact_ratio": float(fa.eye_contact[measured].mean()) if measured.any() else None,
        "emotion_frames": int(has_emotion.sum()),
        "emotion_means": means,
        "dominant": dominant,
        "dominant_probability": means[dominant] if means and dominant else None,
        "mean_confidence": _mean(fa.confidence),
        "uncertain_ratio": float(fa.uncertain[has_emotion].mean()) if has_emotion.any() else None,
    }

