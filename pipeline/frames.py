"""Frame samples as columns (sorted, NaN where missing) and their per-answer summary: face share,
eye contact and its method, head pose, blinks, smiles, framing, mean emotion (old documents too)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from pipeline.axis import Doc, num
from pipeline.schemas import EMOTIONS
from pipeline.signal import runs

# Blink rate needs this much time with the eyes measured; shorter answers give None, not a rate.
MIN_BLINK_SPAN_S = 10.0


class HeadPoseSummary(TypedDict):
    """Head pose over the frames that have it: median and 90th percentile of |angle|, degrees."""

    frames: int
    yaw_median: float
    yaw_p90: float
    pitch_median: float
    pitch_p90: float
    roll_median: float
    roll_p90: float


class FramingSummary(TypedDict):
    """Median face position in the picture (+ = right/down in the stored image) and size."""

    frames: int
    dx: float  # face centre minus picture centre, share of the picture's width
    dy: float  # share of its height
    scale: float  # face width / picture width


class FrameSummary(TypedDict):
    """What the card needs of an answer's frames; every face-derived value is None without a face."""

    frames: int
    face_frames: int
    face_ratio: float | None
    eye_contact_frames: int
    eye_contact_ratio: float | None
    eye_contact_method: str | None  # "iris" or "frontal-proxy"; None when the frames do not say
    too_small_frames: int  # a face was found but was too small to judge
    emotion_frames: int
    emotion_means: dict[str, float] | None
    dominant: str | None
    dominant_probability: float | None
    mean_confidence: float | None
    uncertain_ratio: float | None
    head_pose: HeadPoseSummary | None
    eyes_frames: int
    blink_count: int | None
    blink_rate_per_min: float | None  # closed-eye runs among sampled frames per minute (None: too short)
    smile_frames: int
    smile_ratio: float | None
    framing: FramingSummary | None


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
    head_yaw: np.ndarray  # degrees, + = toward the image's right; NaN where not measured
    head_pitch: np.ndarray  # degrees, + = down
    head_roll: np.ndarray  # degrees, + = clockwise in the image
    gaze_yaw: np.ndarray  # degrees, gaze direction
    gaze_pitch: np.ndarray
    framing_dx: np.ndarray  # share of the picture, + = right
    framing_dy: np.ndarray  # + = down
    framing_scale: np.ndarray  # face width / picture width
    eyes_closed: np.ndarray  # 1.0 / 0.0 / NaN
    smile: np.ndarray  # 0-1 smile score
    smiling: np.ndarray  # 1.0 / 0.0 / NaN
    too_small: np.ndarray  # bool: a face too small to judge
    method: tuple[str | None, ...]  # eye-contact method per frame ("iris", "frontal-proxy", None)

    def __len__(self) -> int:
        return len(self.t_ms)


_FLOATS = ("confidence", "gaze_score", "eye_contact", "movement", "head_yaw", "head_pitch", "head_roll",
           "gaze_yaw", "gaze_pitch", "framing_dx", "framing_dy", "framing_scale", "eyes_closed", "smile", "smiling")


def _f(d: Mapping[str, Any] | None, key: str) -> float:
    v = num(d.get(key)) if isinstance(d, Mapping) else None
    return np.nan if v is None else v


def _flag(d: Mapping[str, Any] | None, key: str) -> float:
    v = d.get(key) if isinstance(d, Mapping) else None
    return np.nan if v is None else (1.0 if v else 0.0)


def _pair(v: Any) -> tuple[float, float]:
    if isinstance(v, list | tuple) and len(v) == 2:
        a, b = num(v[0]), num(v[1])
        if a is not None and b is not None:
            return a, b
    return np.nan, np.nan


def frame_arrays(frames: Sequence[Doc] | FrameArrays) -> FrameArrays:
    """Columns of the frame documents; old documents (no head pose, framing, eyes or mouth) give NaN there."""
    if isinstance(frames, FrameArrays):
        return frames
    n = len(frames)
    t = np.full(n, np.nan)
    face = np.zeros(n, bool)
    unc = np.zeros(n, bool)
    small = np.zeros(n, bool)
    emo = np.full((n, len(EMOTIONS)), np.nan)
    cols = {k: np.full(n, np.nan) for k in _FLOATS}
    method: list[str | None] = [None] * n
    for i, f in enumerate(frames):
        ti = num(f.get("t"))
        t[i] = np.nan if ti is None else ti
        small[i] = bool(f.get("too_small"))
        if not f.get("face"):
            continue  # no face: every face-derived value stays missing
        face[i] = True
        e = f.get("emotions")
        if e:
            emo[i] = [float(e.get(k) or 0.0) for k in EMOTIONS]
            cols["confidence"][i] = _f(f, "confidence")
        unc[i] = bool(f.get("uncertain"))
        g, h = f.get("gaze"), f.get("head")
        eyes, mouth, framing = f.get("eyes"), f.get("mouth"), f.get("framing")
        for key, src, field in (("gaze_score", g, "score"), ("movement", h, "movement"), ("head_yaw", h, "yaw"),
                                ("head_pitch", h, "pitch"), ("head_roll", h, "roll"), ("gaze_yaw", g, "yaw"),
                                ("gaze_pitch", g, "pitch"), ("framing_scale", framing, "scale"),
                                ("smile", mouth, "smile")):
            cols[key][i] = _f(src, field)
        cols["eye_contact"][i] = _flag(g, "eye_contact")
        cols["eyes_closed"][i] = _flag(eyes, "closed")
        cols["smiling"][i] = _flag(mouth, "smiling")
        if isinstance(framing, Mapping):
            cols["framing_dx"][i], cols["framing_dy"][i] = _pair(framing.get("offset"))
        m = g.get("method") if isinstance(g, Mapping) else None
        method[i] = str(m) if m else None
    keep = ~np.isnan(t)
    order = np.argsort(t[keep], kind="stable")
    sel = np.flatnonzero(keep)[order]
    return FrameArrays(
        t_ms=t[sel], face=face[sel], emotions=emo[sel], uncertain=unc[sel], too_small=small[sel],
        method=tuple(method[i] for i in sel), **{k: v[sel] for k, v in cols.items()},
    )


def _mean(a: np.ndarray) -> float | None:
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else None


def _head_pose(fa: FrameArrays) -> HeadPoseSummary | None:
    ok = ~np.isnan(fa.head_yaw) & ~np.isnan(fa.head_pitch) & ~np.isnan(fa.head_roll)
    if not ok.any():
        return None
    y, p, r = (np.abs(a[ok]) for a in (fa.head_yaw, fa.head_pitch, fa.head_roll))

    def q(a: np.ndarray, pct: float) -> float:
        return round(float(np.percentile(a, pct)), 1)

    return {"frames": int(ok.sum()), "yaw_median": q(y, 50), "yaw_p90": q(y, 90), "pitch_median": q(p, 50),
            "pitch_p90": q(p, 90), "roll_median": q(r, 50), "roll_p90": q(r, 90)}


def _blinks(fa: FrameArrays) -> tuple[int, int | None, float | None]:
    """(frames with eyes measured, closed-eye runs, runs per minute over their time span)."""
    measured = ~np.isnan(fa.eyes_closed)
    k = int(measured.sum())
    if not k:
        return 0, None, None
    closed = fa.eyes_closed[measured] == 1.0  # a run of closed samples is one blink
    count = len(runs(closed))
    t = fa.t_ms[measured]
    span_s = (float(t[-1]) - float(t[0])) / 1000.0
    rate = round(count / (span_s / 60.0), 1) if span_s >= MIN_BLINK_SPAN_S else None
    return k, count, rate


def _framing(fa: FrameArrays) -> FramingSummary | None:
    ok = ~np.isnan(fa.framing_dx) & ~np.isnan(fa.framing_dy) & ~np.isnan(fa.framing_scale)
    if not ok.any():
        return None
    return {"frames": int(ok.sum()), "dx": round(float(np.median(fa.framing_dx[ok])), 3),
            "dy": round(float(np.median(fa.framing_dy[ok])), 3),
            "scale": round(float(np.median(fa.framing_scale[ok])), 3)}


def eye_contact_method(fa: FrameArrays) -> str | None:
    """The method most judged frames used ("iris" or "frontal-proxy"); None when none says."""
    judged = [m for m, e in zip(fa.method, fa.eye_contact, strict=True) if m and not np.isnan(e)]
    return Counter(judged).most_common(1)[0][0] if judged else None


def frame_summary(frames: Sequence[Doc] | FrameArrays) -> FrameSummary:
    """Share of frames with a face and with eye contact, mean emotion over face frames, head pose,
    blinks, smiles and framing. Every value that needs a face is None when no frame had one (never 0)."""
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
    eyes_frames, blink_count, blink_rate = _blinks(fa)
    has_smile = ~np.isnan(fa.smiling)
    return {
        "frames": n,
        "face_frames": k,
        "face_ratio": k / n if n else None,
        "eye_contact_frames": int(measured.sum()),
        "eye_contact_ratio": float(fa.eye_contact[measured].mean()) if measured.any() else None,
        "eye_contact_method": eye_contact_method(fa),
        "too_small_frames": int(fa.too_small.sum()),
        "emotion_frames": int(has_emotion.sum()),
        "emotion_means": means,
        "dominant": dominant,
        "dominant_probability": means[dominant] if means and dominant else None,
        "mean_confidence": _mean(fa.confidence),
        "uncertain_ratio": float(fa.uncertain[has_emotion].mean()) if has_emotion.any() else None,
        "head_pose": _head_pose(fa),
        "eyes_frames": eyes_frames,
        "blink_count": blink_count,
        "blink_rate_per_min": blink_rate,
        "smile_frames": int(has_smile.sum()),
        "smile_ratio": round(float(fa.smiling[has_smile].mean()), 3) if has_smile.any() else None,
        "framing": _framing(fa),
    }
