"""Face advice of one answer: looking away while speaking, tied to its time (m:ss) and key point,
the gentler framing hint (position and size in the picture), and the head-pose wording."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.axis import AnswerClock, Doc, EvidenceRow, answer_clock, num
from pipeline.frames import FrameArrays, FramingSummary, HeadPoseSummary, frame_arrays
from pipeline.report import ReportOptions
from pipeline.signal import median_step
from pipeline.text import quoted

# Judged samples further apart than this (face lost, eyes closed, too small) end a look-away run.
BRIDGE_SECONDS = 1.0
MAX_GAZE_LINES = 3


@dataclass(frozen=True)
class LookAway:
    """One stretch of looking away while speaking, on the answer axis (seconds since it began)."""

    start_s: float
    end_s: float
    direction: str | None  # "down", "up", "to the side"; None when no angle was measured
    key_point: str | None  # the covered key point it overlaps most, if any
    speaking: bool = True  # cut to the speaking stretches (False: no transcript to cut it to)

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


def mmss(seconds: float) -> str:
    """0:42, 1:05: the answer clock as a person reads it."""
    s = max(0, int(round(seconds)))
    return f"{s // 60}:{s % 60:02d}"


def speaking_spans(answer: Doc, clock: AnswerClock, join_gap_s: float) -> list[tuple[float, float]]:
    """Stretches of speech on the answer axis: words joined across silences shorter than ``join_gap_s``."""
    spans: list[tuple[float, float]] = []
    for w in answer.get("words") or []:
        if not str(w.get("word", "")).strip():
            continue
        a = clock.word_x(w)
        b = a + max(0.0, float(w.get("end") or 0.0) - float(w.get("start") or 0.0))
        if spans and a - spans[-1][1] < join_gap_s:
            spans[-1] = (spans[-1][0], max(spans[-1][1], b))
        else:
            spans.append((a, b))
    return spans


def _direction(yaw: np.ndarray, pitch: np.ndarray) -> str | None:
    ok = ~np.isnan(yaw) & ~np.isnan(pitch)
    if not ok.any():
        return None
    y, p = float(np.median(yaw[ok])), float(np.median(pitch[ok]))
    if abs(p) >= abs(y):
        return "down" if p > 0 else "up"
    return "to the side"


def look_away_runs(fa: FrameArrays, clock: AnswerClock, speaking: Sequence[tuple[float, float]] | None,
                   min_seconds: float, key_points: Sequence[EvidenceRow] = ()) -> list[LookAway]:
    """Runs of judged frames without eye contact, cut to the speaking stretches (all of the run when
    ``speaking`` is None: no transcript), at least ``min_seconds`` long, longest first."""
    if not len(fa) or clock.origin_ms is None:
        return []
    x = (fa.t_ms - clock.origin_ms) / 1000.0
    dt = median_step(x) if len(x) > 1 else 0.0
    judged = np.flatnonzero(~np.isnan(fa.eye_contact))
    raw: list[tuple[int, int]] = []  # index ranges into fa (inclusive) of consecutive away samples
    start = prev = -1
    for i in judged:
        away = fa.eye_contact[i] == 0.0
        if away and start >= 0 and x[i] - x[prev] <= BRIDGE_SECONDS:
            prev = int(i)
            continue
        if start >= 0:
            raw.append((start, prev))
        start = prev = int(i) if away else -1
    if start >= 0:
        raw.append((start, prev))
    # Prefer the gaze direction (iris) where measured, else the head pose.
    use_gaze = ~np.isnan(fa.gaze_yaw) & ~np.isnan(fa.gaze_pitch)
    yaw = np.where(use_gaze, fa.gaze_yaw, fa.head_yaw)
    pitch = np.where(use_gaze, fa.gaze_pitch, fa.head_pitch)
    out: list[LookAway] = []
    for a, b in raw:
        lo, hi = float(x[a]), float(x[b]) + dt
        pieces = [(max(lo, s), min(hi, e)) for s, e in speaking] if speaking is not None else [(lo, hi)]
        for s, e in pieces:
            if e - s < min_seconds - 1e-9:
                continue
            inside = (x >= s - 1e-9) & (x < e) & (fa.eye_contact == 0.0)
            out.append(LookAway(round(s, 2), round(e, 2), _direction(yaw[inside], pitch[inside]),
                                _overlapping_point(s, e, key_points), speaking is not None))
    return sorted(out, key=lambda r: (-r.seconds, r.start_s))


def _overlapping_point(s: float, e: float, key_points: Sequence[EvidenceRow]) -> str | None:
    """The covered key point whose span overlaps [s, e) most, counted only when the overlap is at least
    half of the shorter of the two (a brush at the edge is not "while making" it)."""
    best, most = None, 0.0
    for r in key_points:
        if not r["covered"] or r["start_s"] is None:
            continue
        end = r["end_s"] if r["end_s"] is not None else r["start_s"]
        overlap = min(e, end) - max(s, r["start_s"])
        if overlap > most and overlap >= 0.5 * min(e - s, max(end - r["start_s"], 1e-9)):
            best, most = r["key_point"], overlap
    return best


def look_away_lines(found: Sequence[LookAway], method: str | None, limit: int = MAX_GAZE_LINES) -> list[str]:
    """Advice lines, longest first. Only the iris method claims where the eyes looked; the
    frontal-face proxy (or an unknown method) says the face turned away."""
    lines = []
    for r in found[:limit]:
        when = f"at {mmss(r.start_s)}–{mmss(r.end_s)}"
        during = (f" while making your key point {quoted(r.key_point, 50)}" if r.key_point
                  else " while speaking" if r.speaking else "")
        if method == "iris":
            where = f"looked {r.direction}" if r.direction else "looked away from the camera"
            lines.append(f"You {where} {when}{during}: keep your eyes on the camera as you make your points.")
        else:
            where = f"turned {r.direction}, away from the camera," if r.direction else "turned away from the camera"
            lines.append(f"Your face {where} {when}{during}: face the camera as you make your points.")
    return lines


def framing_hint(framing: FramingSummary | None, offset_limit: float, small_face: float) -> str | None:
    """A gentle framing hint from the median face position and size (not eye contact), or None.

    Offsets are in the picture as stored (+ = right / down); the browser preview is often mirrored,
    so left/right is said "in the picture"."""
    if framing is None:
        return None
    where = []
    if framing["dy"] <= -offset_limit:
        where.append("high")
    elif framing["dy"] >= offset_limit:
        where.append("low")
    if framing["dx"] <= -offset_limit:
        where.append("to the left")
    elif framing["dx"] >= offset_limit:
        where.append("to the right")
    parts = []
    if where:
        parts.append(f"your face sits {' and '.join(where)} in the picture; move the camera or your seat so it is "
                     "nearer the centre")
    if framing["scale"] < small_face:
        parts.append(f"you are far from the camera (your face is {framing['scale']:.0%} of the picture's width); "
                     "sit a little closer")
    if not parts:
        return None
    text = "; ".join(parts)
    return f"Framing (this does not affect eye contact): {text}."


def head_pose_text(pose: HeadPoseSummary | None) -> str | None:
    """'yaw 4°, pitch 9°, roll 2° (median |angle|)', or None when head pose was not measured."""
    if pose is None:
        return None
    return (f"yaw {pose['yaw_median']:.0f}°, pitch {pose['pitch_median']:.0f}°, roll {pose['roll_median']:.0f}° "
            "(median |angle|)")


METHOD_TEXT = {"iris": "iris gaze (face landmarks)", "frontal-proxy": "frontal-face proxy (face turned to the camera)"}


def _pct(v: float) -> str:
    return f"{round(v * 100)}%"


def eye_contact_tile(ratio: float | None, method: str | None) -> tuple[str, str, str | None]:
    """The eye-contact tile's label (with its method), value and tooltip."""
    short = {"iris": "iris", "frontal-proxy": "proxy"}.get(str(method))
    return (f"Eye contact · {short}" if short else "Eye contact", f"{ratio:.0%}" if ratio is not None else "—",
            f"measured by {METHOD_TEXT[str(method)]}" if method in METHOD_TEXT else None)


def add_face_advice(answer: Doc, fs: Mapping[str, Any], frames: Sequence[Doc] | FrameArrays | None,
                    opts: ReportOptions, evidence: list[EvidenceRow], advice: list[str], missing: list[str],
                 notes: list[str]) -> None:
    """Eye contact (its share, and the look-away stretches with their times), framing, head pose,
    blinks and smiles of an answer whose frames had a face."""
    eye_ratio = num(fs.get("eye_contact_ratio"))
    method = fs.get("eye_contact_method")
    how = {"iris": " (iris gaze)", "frontal-proxy": " (frontal-face proxy: the face turned to the camera)"}
    measured = how.get(str(method), "")
    if eye_ratio is None:
        if fs.get("too_small_frames"):
            missing.append("Eye contact could not be judged: your face was too small in the picture "
                           "(sit closer to the camera).")
        else:
            missing.append("Eye contact could not be measured (no eyes found).")
    elif eye_ratio < opts.eye_contact_good:
        advice.append(f"Eye contact on {_pct(eye_ratio)} of frames with a face{measured}: look at the camera more, "
                      "especially while making your key points.")
    else:
        advice.append(f"Eye contact on {_pct(eye_ratio)} of frames with a face{measured}: good.")
    if eye_ratio is not None and frames is not None:
        fa = frame_arrays(frames)
        clock = answer_clock(answer, float(fa.t_ms[0]) if len(fa) else None)
        words = [w for w in (answer.get("words") or []) if str(w.get("word", "")).strip()]
        speaking = speaking_spans(answer, clock, opts.pause_seconds) if words else None
        found = look_away_runs(fa, clock, speaking, opts.gaze_away_min_seconds, evidence)
        advice += look_away_lines(found, method)
    hint = framing_hint(fs.get("framing"), opts.framing_offset_hint, opts.framing_small_face)
    if hint:
        advice.append(hint)
    pose = head_pose_text(fs.get("head_pose"))
    geometric = []
    if pose:
        geometric.append(f"Head pose: {pose}")
    blinks = num(fs.get("blink_rate_per_min"))
    if blinks is not None:
        geometric.append(f"blinks: {blinks:.0f} per minute (closed-eye runs among the sampled frames, "
                         "from the eye aspect ratio; short blinks between samples are missed)")
    smile = num(fs.get("smile_ratio"))
    if smile is not None:
        geometric.append(f"smiling in {_pct(smile)} of frames (mouth width and corner lift)")
    if geometric:
        notes.append("; ".join(geometric) + ".")
