"""Session report: one aligned timeline figure and one feedback card per answer.

Pure logic (no Streamlit): the page only lays these out. Everything is placed on one
axis, seconds since the answer began (``answer.started_ms``):

- frames: ``(t - started_ms) / 1000``;
- words: ``(t_ms - started_ms) / 1000``, or ``audio offset + start`` on docs without ``t_ms``;
- every other audio-relative time (fillers, pauses, key-point spans, pace, prosody) is
  seconds since ``audio_started_ms``, shifted by the same audio offset.

Display rules that keep the feedback honest:
- a missing signal (no face, no speech, no prosody) is a gap (``None``) or a "missing"
  message, never an interpolated or invented number;
- long tracks are bucket-averaged for display only (``max_display_points`` per trace);
  the stored documents are never modified;
- emotion is smoothed only inside runs of face frames, and can be switched off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pipeline.safe_text import plain_html
from pipeline.schemas import EMOTIONS
from pipeline.settings import DEFAULT_FILLERS, Settings
from pipeline.speech_metrics import find_fillers, find_pauses, pace_band

Doc = Mapping[str, Any]

EMOTION_COLOURS = {
    "angry": "#d62728",
    "disgust": "#8c564b",
    "fear": "#9467bd",
    "happy": "#f2b701",
    "sad": "#1f77b4",
    "surprise": "#17becf",
    "neutral": "#b8c2cc",
}
ROW_TITLES = {
    "emotion": "Emotion (stacked probability)",
    "gaze": "Eye contact and head movement",
    "speech": "Words, fillers, pauses, key points",
    "pace": "Speaking pace",
    "voice": "Pitch and energy",
}
ROW_HEIGHTS = {"emotion": 0.22, "gaze": 0.16, "speech": 0.28, "pace": 0.16, "voice": 0.18}
# Frames further apart than this (or 3x the usual interval) mean video is missing there.
MIN_HOLE_SECONDS = 1.0
# Pause longer than this gets the "say you need a moment" advice.
LONG_PAUSE_ADVICE_SECONDS = 3.0
FACE_RATIO_ADVICE = 0.8


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ReportOptions:
    emotion_smoothing_window: int = 5
    pause_seconds: float = 1.0
    emotion_enabled: bool = True
    max_display_points: int = 2000  # per trace; display only
    pace_low_wpm: float = 110.0
    pace_high_wpm: float = 170.0
    emotion_confidence_floor: float = 0.35
    min_answer_words: int = 8
    filler_words: tuple[str, ...] = DEFAULT_FILLERS
    eye_contact_good: float = 0.6  # below this share of face frames the card advises more eye contact
    word_label_limit: int = 80  # more words than this: markers with hover only (labels would overlap)
    gl_min_points: int = 1500  # marker traces this large use WebGL

    @classmethod
    def from_settings(cls, settings: Settings, session_settings: Mapping[str, Any] | None = None) -> ReportOptions:
        """Current settings (so re-tuned thresholds apply to stored sessions); emotion also
        stays off when the session itself was recorded with emotion switched off."""
        snapshot = session_settings or {}
        return cls(
            emotion_smoothing_window=int(settings.emotion_smoothing_window),
            pause_seconds=float(settings.pause_seconds),
            emotion_enabled=bool(settings.emotion_enabled) and bool(snapshot.get("emotion_enabled", True)),
            max_display_points=int(settings.report_max_points),
            pace_low_wpm=float(settings.pace_low_wpm),
            pace_high_wpm=float(settings.pace_high_wpm),
            emotion_confidence_floor=float(settings.emotion_confidence_floor),
            min_answer_words=int(settings.min_answer_words),
            filler_words=tuple(settings.filler_words),
        )


# --------------------------------------------------------------------------- clock


@dataclass(frozen=True)
class AnswerClock:
    origin_ms: float | None  # epoch ms of x = 0
    audio_offset_s: float  # audio-relative seconds + this = seconds since the answer began
    end_s: float | None  # the answer's length on that axis, when known

    def word_x(self, word: Doc) -> float:
        t_ms = word.get("t_ms")
        if t_ms is not None and self.origin_ms is not None:
            return (float(t_ms) - self.origin_ms) / 1000.0
        return self.audio_offset_s + float(word.get("start") or 0.0)

    def audio_x(self, seconds: float) -> float:
        return self.audio_offset_s + float(seconds)


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def answer_clock(answer: Doc, first_frame_ms: float | None = None) -> AnswerClock:
    started = _num(answer.get("started_ms"))
    audio = _num(answer.get("audio_started_ms"))
    origin = started if started is not None else audio if audio is not None else first_frame_ms
    offset = (audio - origin) / 1000.0 if audio is not None and origin is not None else 0.0
    ended = _num(answer.get("ended_ms"))
    end_s = (ended - origin) / 1000.0 if ended is not None and origin is not None and ended >= origin else None
    return AnswerClock(origin, offset, end_s)


# --------------------------------------------------------------------------- frames


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
        ti = _num(f.get("t"))
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


def frame_summary(frames: Sequence[Doc] | FrameArrays) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- signal helpers


def smooth_segments(values: np.ndarray, window: int, breaks: np.ndarray | None = None) -> np.ndarray:
    """Centred moving average inside each run of valid (non-NaN) rows; never across a gap.

    ``values`` is (n,) or (n, k), rows valid when their first column is not NaN;
    ``breaks[i]`` True forces a new run at row i (a hole in the sampling).
    """
    y = np.asarray(values, dtype=float)
    flat = y.ndim == 1
    y2 = y[:, None] if flat else y
    n = len(y2)
    valid = ~np.isnan(y2[:, 0]) if n else np.zeros(0, bool)
    if window <= 1 or n == 0 or not valid.any():
        out = y2.copy()
    else:
        brk = np.zeros(n, bool) if breaks is None else np.asarray(breaks, bool)
        prev_valid = np.r_[False, valid[:-1]]
        next_valid = np.r_[valid[1:], False]
        start = valid & (~prev_valid | brk)
        end = valid & (~next_valid | np.r_[brk[1:], True])
        starts, ends = np.flatnonzero(start), np.flatnonzero(end)
        seg = np.clip(np.cumsum(start) - 1, 0, None)
        i = np.arange(n)
        lo = np.maximum(i - (window - 1) // 2, starts[seg])
        hi = np.minimum(i + window // 2, ends[seg])
        hi = np.where(valid, hi, lo)  # invalid rows: any non-empty window, masked below
        csum = np.vstack([np.zeros((1, y2.shape[1])), np.cumsum(np.where(valid[:, None], y2, 0.0), axis=0)])
        out = (csum[hi + 1] - csum[lo]) / (hi - lo + 1)[:, None]
        out[~valid] = np.nan
    return out[:, 0] if flat else out


def bucket_mean(
    x: np.ndarray, values: np.ndarray, max_points: int, min_valid_fraction: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Display-only downsampling: the mean of each of ``max_points`` equal time buckets.

    A bucket's value is NaN (a gap) when fewer than ``min_valid_fraction`` of its samples
    (and at least one) are valid, so a gap wider than a bucket stays a gap. Inputs are
    returned as copies, untouched, when they already fit.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(values, dtype=float)
    flat = y.ndim == 1
    y2 = y[:, None] if flat else y
    n = len(x)
    if n <= max_points or max_points < 2 or x[-1] <= x[0]:
        return x.copy(), y.copy()
    idx = np.minimum(((x - x[0]) / (x[-1] - x[0]) * max_points).astype(np.int64), max_points - 1)
    counts = np.bincount(idx, minlength=max_points).astype(float)
    used = counts > 0  # empty buckets (sparse stretches) are dropped, not turned into gaps
    xb = np.bincount(idx, weights=x, minlength=max_points)[used] / counts[used]
    out = np.empty((int(used.sum()), y2.shape[1]))
    for j in range(y2.shape[1]):
        ok = ~np.isnan(y2[:, j])
        nvalid = np.bincount(idx, weights=ok, minlength=max_points)[used]
        sums = np.bincount(idx, weights=np.where(ok, y2[:, j], 0.0), minlength=max_points)[used]
        good = (nvalid > 0) & (nvalid >= min_valid_fraction * counts[used])
        out[:, j] = np.where(good, sums / np.maximum(nvalid, 1), np.nan)
    return xb, (out[:, 0] if flat else out)


def _holes(x: np.ndarray) -> np.ndarray:
    """(k, 2) intervals between consecutive samples spaced far more than usual."""
    if len(x) < 2:
        return np.zeros((0, 2))
    dt = np.diff(x)
    limit = max(MIN_HOLE_SECONDS, 3.0 * float(np.median(dt)))
    i = np.flatnonzero(dt > limit)
    return np.column_stack([x[i], x[i + 1]])


def _insert_gaps(x: np.ndarray, y: np.ndarray, holes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A NaN row in the middle of each hole, so lines break where nothing was sampled."""
    if not len(holes) or not len(x):
        return x, y
    mids = holes.mean(axis=1)
    pos = np.searchsorted(x, mids)
    gap = np.full((len(mids),) + y.shape[1:], np.nan)
    return np.insert(x, pos, mids), np.insert(y, pos, gap, axis=0)


def _runs(mask: np.ndarray) -> np.ndarray:
    """(k, 2) inclusive index ranges of consecutive True values."""
    d = np.diff(np.r_[0, np.asarray(mask, np.int8), 0])
    return np.column_stack([np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1])


def _band_polygons(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, pad: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed polygons (fill='toself', one per run of valid points, None between them).

    Plotly's tonexty/stackgroup fills bridge gaps; 'toself' honours them. Each run is
    widened by half a sample (``pad``) so an isolated frame is still visible.
    """
    px: list[Any] = []
    py: list[Any] = []
    for i0, i1 in _runs(~np.isnan(upper)):
        xs = np.r_[x[i0] - pad, x[i0 : i1 + 1], x[i1] + pad]
        up = np.r_[upper[i0], upper[i0 : i1 + 1], upper[i1]]
        lo = np.r_[lower[i0], lower[i0 : i1 + 1], lower[i1]]
        px += _pylist(np.r_[xs, xs[::-1]]) + [None]
        py += _pylist(np.r_[up, lo[::-1]], 4) + [None]
    return _gappy(px), _gappy(py)


def _intervals_polygon(intervals: Sequence[tuple[float, float]], y0: float, y1: float) -> tuple[np.ndarray, np.ndarray]:
    px: list[Any] = []
    py: list[Any] = []
    for a, b in intervals:
        px += [round(a, 3), round(a, 3), round(b, 3), round(b, 3), None]
        py += [y0, y1, y1, y0, None]
    return _gappy(px), _gappy(py)


def _merge(intervals: list[tuple[float, float]], tolerance: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a - out[-1][1] <= tolerance:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _pylist(a: np.ndarray, digits: int = 3) -> list[Any]:
    """Rounded floats, None for NaN (a gap, never a number)."""
    return [None if v != v else v for v in np.round(np.asarray(a, dtype=float), digits).tolist()]


def _gappy(values: np.ndarray | list[Any], digits: int = 3) -> np.ndarray:
    """A display array with None at gaps, as an object array: plotly validates it ~10x faster
    than a list (no per-element walk) and still writes None (JSON null) for every gap."""
    items = values if isinstance(values, list) else _pylist(values, digits)
    return np.array(items, dtype=object)


def _step(x: np.ndarray) -> float:
    return float(np.median(np.diff(x))) if len(x) > 1 else 0.1


# --------------------------------------------------------------------------- speech helpers


def answer_fillers(answer: Doc, options: ReportOptions) -> list[dict[str, Any]]:
    """Fillers with the current filler list when words are stored; else the stored ones."""
    words = answer.get("words") or []
    if words:
        return find_fillers(words, options.filler_words)
    return list((answer.get("metrics") or {}).get("fillers") or [])


def answer_pauses(answer: Doc, options: ReportOptions) -> list[dict[str, float]]:
    """Pauses with the current threshold when words are stored; else the stored ones."""
    words = answer.get("words") or []
    if words:
        return find_pauses(words, options.pause_seconds)
    stored = (answer.get("metrics") or {}).get("pauses") or []
    return [p for p in stored if float(p.get("duration", 0)) >= options.pause_seconds]


def _key_point_rows(answer: Doc, clock: AnswerClock) -> list[dict[str, Any]]:
    """One row per key point: covered or not, with its span and times (answer axis)."""
    grade = answer.get("grade") or {}
    closest = {
        str(k.get("key_point")): k for k in ((answer.get("features") or {}).get("key_points") or []) if isinstance(k, Mapping)
    }

    def times(item: Mapping[str, Any]) -> tuple[float | None, float | None]:
        s, e = _num(item.get("start")), _num(item.get("end"))
        return (None if s is None else round(clock.audio_x(s), 2), None if e is None else round(clock.audio_x(e), 2))

    rows = []
    for m in grade.get("matched") or []:
        s, e = times(m)
        rows.append({"key_point": str(m.get("key_point", "")), "covered": True, "span": m.get("span") or "",
                     "start_s": s, "end_s": e, "similarity": _num(m.get("similarity"))})
    for m in grade.get("missed") or []:
        kp = str(m.get("key_point", ""))
        near = closest.get(kp, {})
        s, e = times(near)
        rows.append({"key_point": kp, "covered": False, "span": near.get("span") or "",
                     "start_s": s, "end_s": e, "similarity": _num(m.get("best_similarity"))})
    return rows


# --------------------------------------------------------------------------- the figure


@dataclass
class _Rows:
    names: list[str]

    def row(self, name: str) -> int | None:
        return self.names.index(name) + 1 if name in self.names else None


def _note(fig: go.Figure, rows: _Rows, name: str, text: str) -> None:
    """A 'missing' message written across a row, so an empty row says why."""
    r = rows.row(name)
    if r is None:
        return
    sp = fig.get_subplot(r, 1)
    xref = sp.xaxis.plotly_name.replace("axis", "")
    yref = sp.yaxis.plotly_name.replace("axis", "")
    fig.add_annotation(text=text, xref=f"{xref} domain", yref=f"{yref} domain", x=0.5, y=0.5, showarrow=False,
                       font={"color": "#666", "size": 12}, bgcolor="rgba(255,255,255,0.7)")


def answer_timeline(answer: Doc, frames: Sequence[Doc] | FrameArrays, options: ReportOptions | None = None) -> go.Figure:
    """One figure, one shared x axis (seconds since the answer began), a range slider.

    Rows: emotion (when enabled), eye contact + head movement, words/fillers/pauses/key
    points, pace, pitch + energy. Stored documents are read, never modified.
    """
    opts = options or ReportOptions()
    fa = frame_arrays(frames)
    clock = answer_clock(answer, float(fa.t_ms[0]) if len(fa) else None)
    names = (["emotion"] if opts.emotion_enabled else []) + ["gaze", "speech", "pace", "voice"]
    rows = _Rows(names)
    fig = make_subplots(
        rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.035,
        row_heights=[ROW_HEIGHTS[n] for n in names],
        subplot_titles=[ROW_TITLES[n] for n in names],
        specs=[[{"secondary_y": n in ("gaze", "voice")}] for n in names],
    )
    step = max(opts.max_display_points, 2)
    x_frames = (fa.t_ms - clock.origin_ms) / 1000.0 if len(fa) and clock.origin_ms is not None else np.zeros(0)
    holes = _holes(x_frames)
    extent = [0.0, clock.end_s or 0.0]

    # (a) + (b): the face tracks
    if len(x_frames):
        extent = [min(extent[0], float(x_frames[0])), max(extent[1], float(x_frames[-1]))]
        _frame_rows(fig, rows, fa, x_frames, holes, opts, step, clock.end_s)
    else:
        _note(fig, rows, "emotion", "No video frames stored for this answer")
        _note(fig, rows, "gaze", "No video frames stored for this answer")

    # (c) words, fillers, pauses, key points
    xmax = _speech_row(fig, rows, answer, clock, opts)
    # (d) + (e): pace and prosody
    xmax = max(xmax, _voice_rows(fig, rows, answer, clock, opts, step))
    extent[1] = max(extent[1], xmax)

    last = len(names)
    x_range = [extent[0], extent[1] if extent[1] > extent[0] else extent[0] + 1.0]
    fig.update_xaxes(ticksuffix=" s", hoverformat=".1f")  # every row: the unified hover reads "12.3 s"
    # Explicit slider range: its autorange would include the padding of the fill polygons.
    fig.update_xaxes(range=x_range, title_text="seconds since the answer began", row=last, col=1,
                     rangeslider={"visible": True, "thickness": 0.05, "range": x_range, "autorange": False})
    fig.update_layout(
        height=170 * len(names) + 160, hovermode="x unified", margin={"l": 60, "r": 60, "t": 70, "b": 40},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "font": {"size": 11}},
        uirevision=str(answer.get("_id", "")),  # keep the user's zoom across reruns of the page
    )
    return fig


def _frame_rows(fig: go.Figure, rows: _Rows, fa: FrameArrays, x: np.ndarray, holes: np.ndarray,
                opts: ReportOptions, step: int, end_s: float | None) -> None:
    # Samples right after a hole start a new smoothing run.
    breaks = np.zeros(len(x), bool)
    if len(holes):
        breaks[np.searchsorted(x, holes[:, 1])] = True
    r_em = rows.row("emotion")
    has_emotion = ~np.isnan(fa.emotions[:, 0])
    if r_em is not None:
        if has_emotion.any():
            sm = smooth_segments(fa.emotions, opts.emotion_smoothing_window, breaks)
            extra = np.column_stack([fa.confidence, fa.uncertain.astype(float)])
            extra[~has_emotion] = np.nan
            xb, yb = bucket_mean(x, np.column_stack([sm, extra]), step, 0.5)
            xb, yb = _insert_gaps(xb, yb, holes)
            probs, conf, unc = yb[:, : len(EMOTIONS)], yb[:, len(EMOTIONS)], yb[:, len(EMOTIONS) + 1]
            pad = _step(xb) / 2
            upper = np.cumsum(probs, axis=1)
            lower = upper - probs
            for j, name in enumerate(EMOTIONS):
                px, py = _band_polygons(xb, lower[:, j], upper[:, j], pad)
                fig.add_trace(go.Scatter(
                    x=px, y=py, name=name, fill="toself", mode="lines", line={"width": 0},
                    fillcolor=EMOTION_COLOURS[name], hoverinfo="skip",
                ), row=r_em, col=1)
            # One invisible line carries the hover: every probability plus the model's confidence.
            dom = np.array(EMOTIONS)[np.argmax(np.nan_to_num(probs, nan=-1), axis=1)]
            custom = np.column_stack([np.round(probs, 3), np.round(conf, 3), np.round(unc, 2)])
            fig.add_trace(go.Scatter(
                x=_gappy(xb), y=_gappy(upper[:, -1], 3), mode="lines", line={"width": 0}, showlegend=False,
                name="emotion", text=np.where(np.isnan(probs[:, 0]), None, dom).tolist(),
                customdata=custom.astype(np.float32),  # NaN only where y is a gap (no hover there)
                hovertemplate="<b>%{text}</b> (confidence %{customdata[7]:.2f}, uncertain %{customdata[8]:.0%})<br>"
                + "<br>".join(f"{e} %{{customdata[{j}]:.0%}}" for j, e in enumerate(EMOTIONS))
                + "<extra></extra>",
            ), row=r_em, col=1)
            fig.update_yaxes(range=[0, 1.02], row=r_em, col=1)
        else:
            _note(fig, rows, "emotion", "No face found: no emotion for this answer")

    r_g = rows.row("gaze")
    assert r_g is not None
    # Missing evidence (no face, or no frames at all) shaded grey behind the gaze row.
    dt = _step(x)
    missing = [(float(x[a]) - dt / 2, float(x[b]) + dt / 2) for a, b in _runs(~fa.face)]
    missing += [(float(a), float(b)) for a, b in holes]
    # Video that started late or stopped early is missing evidence too.
    if x[0] > MIN_HOLE_SECONDS:
        missing.append((0.0, float(x[0]) - dt / 2))
    if end_s is not None and end_s - x[-1] > MIN_HOLE_SECONDS:
        missing.append((float(x[-1]) + dt / 2, end_s))
    span = (x[-1] - x[0]) if len(x) > 1 else 0.0
    merged = _merge(missing, span / step if len(x) > step else 0.0)
    if merged:
        px, py = _intervals_polygon(merged, 0.0, 1.0)
        fig.add_trace(go.Scatter(x=px, y=py, fill="toself", mode="lines", line={"width": 0},
                                 fillcolor="rgba(120,120,120,0.25)", name="no face / no video",
                                 hoveron="fills", hoverinfo="name"), row=r_g, col=1)
    if fa.face.any():
        xb, yb = bucket_mean(x, np.column_stack([fa.gaze_score, fa.eye_contact, fa.movement]), step, 0.5)
        xb, yb = _insert_gaps(xb, yb, holes)
        fig.add_trace(go.Scatter(x=_gappy(xb), y=_gappy(yb[:, 0]), name="eye contact score", mode="lines",
                                 line={"color": "#2ca02c"}, connectgaps=False,
                                 customdata=_gappy(yb[:, 1], 2),
                                 hovertemplate="eye contact score %{y:.2f} (on %{customdata:.0%} of frames)<extra></extra>"),
                      row=r_g, col=1)
        fig.add_trace(go.Scatter(x=_gappy(xb), y=_gappy(yb[:, 2], 4), name="head movement", mode="lines",
                                 line={"color": "#ff7f0e", "width": 1}, connectgaps=False,
                                 hovertemplate="head movement %{y:.3f}<extra></extra>"),
                      row=r_g, col=1, secondary_y=True)
    else:
        _note(fig, rows, "gaze", "No face found: no eye contact or head movement")
    fig.update_yaxes(range=[0, 1.02], title_text="score", row=r_g, col=1, secondary_y=False)
    fig.update_yaxes(title_text="movement", rangemode="tozero", row=r_g, col=1, secondary_y=True, showgrid=False)


def _speech_row(fig: go.Figure, rows: _Rows, answer: Doc, clock: AnswerClock, opts: ReportOptions) -> float:
    r = rows.row("speech")
    assert r is not None
    words = [w for w in (answer.get("words") or []) if str(w.get("word", "")).strip()]
    xmax = 0.0
    ticks: list[tuple[float, str]] = []
    # Pauses: grey blocks behind the words, a marker per pause carrying its hover.
    pauses = answer_pauses(answer, opts)
    if pauses:
        spans = [(clock.audio_x(p["start"]), clock.audio_x(p["end"])) for p in pauses]
        px, py = _intervals_polygon(spans, -1.5, 0.5)
        fig.add_trace(go.Scatter(x=px, y=py, fill="toself", mode="lines", line={"width": 0},
                                 fillcolor="rgba(31,119,180,0.12)", name="pauses", legendgroup="pauses",
                                 hoverinfo="skip"), row=r, col=1)
        fig.add_trace(go.Scatter(
            x=[round((a + b) / 2, 3) for a, b in spans], y=[-1.2] * len(spans), mode="markers",
            marker={"symbol": "line-ew-open", "size": 12, "color": "#1f77b4"}, showlegend=False, legendgroup="pauses",
            name="pause", customdata=[[round(a, 1), round(b, 1), round(float(p["duration"]), 1)] for (a, b), p in
                                      zip(spans, pauses, strict=True)],
            hovertemplate="pause %{customdata[2]} s (%{customdata[0]}–%{customdata[1]} s)<extra></extra>",
        ), row=r, col=1)
        xmax = max(xmax, max(b for _, b in spans))
        ticks.append((-1.2, "pauses"))
    if words:
        # Every word is kept (events, not a signal); numpy arrays keep 9,000 of them cheap to build.
        wx = np.round(np.array([clock.word_x(w) for w in words]), 3)
        text = np.array([plain_html(w["word"]) for w in words], dtype=object)  # Plotly applies tags in text
        labels = len(words) <= opts.word_label_limit
        trace = go.Scattergl if len(words) >= opts.gl_min_points else go.Scatter
        fig.add_trace(trace(
            x=wx, y=np.zeros(len(wx)), mode="markers+text" if labels else "markers", text=text,
            textposition=["top center" if i % 2 else "bottom center" for i in range(len(wx))] if labels else None,
            textfont={"size": 10}, marker={"size": 6, "color": "#444", "symbol": "line-ns-open"}, name="words",
            hovertemplate="%{text} @ %{x:.1f} s<extra></extra>",
        ), row=r, col=1)
        xmax = max(xmax, float(wx.max()))
        ticks.append((0.0, "words"))
    else:
        _note(fig, rows, "speech", "No words transcribed for this answer")
    fillers = answer_fillers(answer, opts)
    if fillers:
        fx = [round(clock.audio_x(f["start"]), 3) for f in fillers]
        fig.add_trace(go.Scatter(
            x=fx, y=[-0.6] * len(fx), mode="markers+text" if len(fx) <= 40 else "markers",
            text=[plain_html(f.get("phrase") or f.get("text") or f.get("word") or "") for f in fillers],
            textposition="middle right",
            textfont={"size": 10, "color": "#d62728"}, marker={"symbol": "x", "size": 9, "color": "#d62728"},
            name="fillers", hovertemplate="filler '%{text}' @ %{x:.1f} s<extra></extra>",
        ), row=r, col=1)
        ticks.append((-0.6, "fillers"))
    # Key points: one level each; covered = the matched span, missed = its closest span dotted.
    kp_rows = _key_point_rows(answer, clock)
    for kind, covered in (("covered", True), ("missed", False)):
        xs: list[Any] = []
        ys: list[Any] = []
        custom: list[Any] = []
        for i, row in enumerate(kp_rows):
            if row["covered"] is not covered or row["start_s"] is None:
                continue
            level = 1.0 + i
            end = row["end_s"] if row["end_s"] is not None else row["start_s"]
            info = [plain_html(row["key_point"][:80]), plain_html((row["span"] or "")[:120]), row["start_s"], end,
                    "–" if row["similarity"] is None else f"{row['similarity']:.2f}"]
            xs += [row["start_s"], end, None]
            ys += [level, level, None]
            custom += [info, info, None]
            xmax = max(xmax, end)
        if xs:
            verb = "covered" if covered else "missed; closest"
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="lines+markers", name=f"key points {kind}", connectgaps=False,
                line={"width": 7 if covered else 3, "color": "#2ca02c" if covered else "#999",
                      "dash": "solid" if covered else "dot"},
                marker={"size": 5}, customdata=custom,
                hovertemplate=f"<b>%{{customdata[0]}}</b><br>{verb}: \"%{{customdata[1]}}\"<br>"
                "%{customdata[2]}–%{customdata[3]} s, similarity %{customdata[4]}<extra></extra>",
            ), row=r, col=1)
    for i, row in enumerate(kp_rows):
        label = row["key_point"] if len(row["key_point"]) <= 28 else row["key_point"][:27] + "…"
        ticks.append((1.0 + i, ("✓ " if row["covered"] else "✗ ") + plain_html(label)))
    if ticks:
        ticks.sort()
        fig.update_yaxes(tickvals=[t for t, _ in ticks], ticktext=[s for _, s in ticks],
                         range=[-1.6, max(0.6, len(kp_rows) + 0.5)], showgrid=False, zeroline=False, row=r, col=1)
    else:
        fig.update_yaxes(showticklabels=False, row=r, col=1)
    return xmax


def _voice_rows(fig: go.Figure, rows: _Rows, answer: Doc, clock: AnswerClock, opts: ReportOptions, step: int) -> float:
    metrics = answer.get("metrics") or {}
    xmax = 0.0
    r = rows.row("pace")
    assert r is not None
    track = [p for p in (metrics.get("pace_track") or []) if _num(p.get("t")) is not None]
    fig.add_hrect(y0=opts.pace_low_wpm, y1=opts.pace_high_wpm, fillcolor="rgba(44,160,44,0.08)", line_width=0,
                  row=r, col=1)
    if track:
        px = np.array([clock.audio_x(p["t"]) for p in track])
        py = np.array([_num(p.get("wpm")) if _num(p.get("wpm")) is not None else np.nan for p in track])
        xb, yb = bucket_mean(px, py, step)
        fig.add_trace(go.Scatter(x=_gappy(xb), y=_gappy(yb, 1), name="pace (wpm)", mode="lines",
                                 line={"color": "#9467bd"}, connectgaps=False,
                                 hovertemplate="pace %{y:.0f} wpm<extra></extra>"), row=r, col=1)
        xmax = float(px.max())
    else:
        _note(fig, rows, "pace", "No pace: too little speech to measure")
    fig.update_yaxes(title_text="wpm", rangemode="tozero", row=r, col=1)

    r = rows.row("voice")
    assert r is not None
    pro = metrics.get("prosody") or None
    t = list((pro or {}).get("t") or [])
    if t:
        tx = clock.audio_offset_s + np.asarray(t, dtype=float)
        pitch = np.array([np.nan if v is None else float(v) for v in (pro.get("pitch_hz") or [None] * len(t))][: len(t)])
        energy = np.array([np.nan if v is None else float(v) for v in (pro.get("energy_db") or [None] * len(t))][: len(t)])
        n = min(len(tx), len(pitch), len(energy))
        # Unvoiced stretches stay gaps; a bucket shows the mean of its voiced frames.
        xb, yb = bucket_mean(tx[:n], np.column_stack([pitch[:n], energy[:n]]), step, 0.0)
        fig.add_trace(go.Scatter(x=_gappy(xb), y=_gappy(yb[:, 0], 1), name="pitch (Hz)", mode="lines",
                                 line={"color": "#e377c2"}, connectgaps=False,
                                 hovertemplate="pitch %{y:.0f} Hz<extra></extra>"), row=r, col=1)
        fig.add_trace(go.Scatter(x=_gappy(xb), y=_gappy(yb[:, 1], 1), name="energy (dB)", mode="lines",
                                 line={"color": "#7f7f7f", "width": 1}, connectgaps=False,
                                 hovertemplate="energy %{y:.0f} dB<extra></extra>"), row=r, col=1, secondary_y=True)
        xmax = max(xmax, float(tx.max()))
    else:
        _note(fig, rows, "voice", "No pitch or energy stored (no audio analysis)")
    fig.update_yaxes(title_text="Hz", row=r, col=1, secondary_y=False)
    fig.update_yaxes(title_text="dB", row=r, col=1, secondary_y=True, showgrid=False)
    return xmax


# --------------------------------------------------------------------------- the card


def _pct(v: float) -> str:
    return f"{round(v * 100)}%"


def _quote(s: str, n: int = 60) -> str:
    s = " ".join(str(s).split())
    return f"'{s if len(s) <= n else s[: n - 1] + '…'}'"


def answer_card(answer: Doc, frame_summary: Mapping[str, Any] | None = None,
                options: ReportOptions | None = None) -> dict[str, Any]:
    """Grade with its evidence, delivery metrics, and advice tied to that evidence.

    ``missing`` says which signals are absent and why; no number is made up for them.
    """
    opts = options or ReportOptions()
    clock = answer_clock(answer)
    grade = answer.get("grade") or {}
    metrics = answer.get("metrics") or {}
    status = answer.get("status")
    flags = list(grade.get("flags") or [])
    advice: list[str] = []
    missing: list[str] = []
    notes: list[str] = []
    words = [w for w in (answer.get("words") or []) if str(w.get("word", "")).strip()]
    has_speech = bool(metrics.get("has_speech", bool(words))) and "no_speech" not in flags
    analysed = status not in ("recording", "transcribing")

    # --- grade and its evidence
    score = _num(grade.get("score"))
    if not analysed:
        missing.append(f"Still being analysed (status: {status}): no grade or speech feedback yet.")
    elif status == "failed":
        err = answer.get("error")
        missing.append(f"Analysis failed{': ' + str(err)[:200] if err else ''}: no grade.")
    elif not has_speech:
        missing.append("No speech detected: no grade, pace, filler or pause feedback.")
    elif score is None:
        missing.append("No grade stored for this answer.")
    if status == "incomplete":
        notes.append("The answer was cut short (status: incomplete): feedback covers only what was recorded.")
    grade_out = None
    if score is not None:
        grade_out = {
            "score": score, "percent": round(score * 100), "band": grade.get("band"), "flags": flags,
            "raw_cosine": _num(grade.get("raw_cosine")), "coverage": _num(grade.get("coverage")),
            "key_point_source": grade.get("key_point_source"),
        }
    evidence = _key_point_rows(answer, clock)
    if evidence and analysed and has_speech:
        covered = [r for r in evidence if r["covered"]]
        missed = [r for r in evidence if not r["covered"]]
        what = "key points" if grade.get("key_point_source") == "author" else "points of the reference answer"
        line = f"You covered {len(covered)} of {len(evidence)} {what}"
        if missed:
            line += "; missed: " + ", ".join(_quote(r["key_point"]) for r in missed[:5])
            line += f" and {len(missed) - 5} more" if len(missed) > 5 else ""
        advice.append(line + ".")
        for r in missed[:3]:
            if r["span"] and r["start_s"] is not None and r["similarity"] is not None:
                advice.append(f"Closest you came to {_quote(r['key_point'], 40)}: {_quote(r['span'])} at "
                              f"{r['start_s']:.1f} s (similarity {r['similarity']:.2f}): say it explicitly.")
    if "too_short" in flags:
        n = metrics.get("word_count", len(words))
        advice.append(f"The answer is short ({n} words; aim for at least {opts.min_answer_words}): "
                      "develop it with a concrete example.")
    if "off_topic" in flags:
        raw = _num(grade.get("raw_cosine"))
        advice.append("The answer looks off-topic" + (f" (similarity to the reference {raw:.2f})" if raw is not None
                                                     else "") + ": answer the question that was asked.")
    if "truncated" in flags:
        notes.append("The transcript was too long and was cut before grading: only its first part was graded.")

    # --- pace
    wpm = _num(metrics.get("wpm")) if has_speech and analysed else None
    band = pace_band(wpm, opts.pace_low_wpm, opts.pace_high_wpm)
    band_text = f"band {opts.pace_low_wpm:.0f}–{opts.pace_high_wpm:.0f}"
    if wpm is not None:
        peak = max(((_num(p.get("wpm")) or 0.0, _num(p.get("t")) or 0.0) for p in metrics.get("pace_track") or []),
                   default=None)
        if band == "fast":
            advice.append(f"Pace {wpm:.0f} wpm is fast ({band_text}): slow down and pause between points.")
        elif band == "slow":
            advice.append(f"Pace {wpm:.0f} wpm is slow ({band_text}): tighten your sentences and keep moving.")
        else:
            line = f"Pace {wpm:.0f} wpm is comfortable ({band_text})"
            if peak and peak[0] > opts.pace_high_wpm:
                line += f", but it peaked at {peak[0]:.0f} wpm around {clock.audio_x(peak[1]):.0f} s"
            advice.append(line + ".")
    elif has_speech and analysed:
        missing.append("Too little speech to measure pace.")

    # --- fillers and pauses (recomputed from the stored words with the current settings)
    fillers = answer_fillers(answer, opts) if has_speech and analysed else []
    pauses = answer_pauses(answer, opts) if has_speech and analysed else []
    filler_list = [{"phrase": str(f.get("phrase") or f.get("text") or f.get("word") or ""),
                    "t_s": round(clock.audio_x(float(f.get("start") or 0.0)), 1)} for f in fillers]
    if has_speech and analysed:
        if filler_list:
            shown = ", ".join(f"'{f['phrase']}' at {f['t_s']:.1f} s" for f in filler_list[:5])
            more = f", and {len(filler_list) - 5} more" if len(filler_list) > 5 else ""
            speaking = _num(metrics.get("speaking_s"))
            rate = f", {len(filler_list) / (speaking / 60):.1f} per minute" if speaking and speaking >= 3 else ""
            advice.append(f"{len(filler_list)} filler{'s' if len(filler_list) != 1 else ''} ({shown}{more}{rate}): "
                          "pause silently instead of filling.")
        else:
            advice.append("No filler words.")
        if pauses:
            longest = max(pauses, key=lambda p: float(p["duration"]))
            line = (f"{len(pauses)} pause{'s' if len(pauses) != 1 else ''} over {opts.pause_seconds:g} s "
                    f"(longest {float(longest['duration']):.1f} s at {clock.audio_x(longest['start']):.1f} s)")
            if float(longest["duration"]) >= LONG_PAUSE_ADVICE_SECONDS:
                line += ": a long silence reads as lost; if you need time, say so."
            else:
                line += ": short pauses are fine, they help the listener."
            advice.append(line)
        else:
            advice.append(f"No pauses over {opts.pause_seconds:g} s.")

    # --- face, eye contact, emotion
    fs = frame_summary or {}
    face_ratio = _num(fs.get("face_ratio"))
    eye_ratio = _num(fs.get("eye_contact_ratio"))
    dominant = fs.get("dominant") if opts.emotion_enabled else None
    if not fs or not fs.get("frames"):
        missing.append("No video frames stored for this answer: no emotion or eye-contact feedback.")
    elif not fs.get("face_frames"):
        missing.append("No face found in this answer: no emotion or eye-contact feedback.")
    else:
        if face_ratio is not None and face_ratio < FACE_RATIO_ADVICE:
            advice.append(f"Your face was found in only {_pct(face_ratio)} of frames: sit centred and well lit "
                          "so the feedback covers the whole answer.")
        if eye_ratio is None:
            missing.append("Eye contact could not be measured (no eyes found).")
        elif eye_ratio < opts.eye_contact_good:
            advice.append(f"Eye contact on {_pct(eye_ratio)} of frames with a face: look at the camera more, "
                          "especially while making your key points.")
        else:
            advice.append(f"Eye contact on {_pct(eye_ratio)} of frames with a face: good.")
        if opts.emotion_enabled and dominant is None:
            missing.append("No emotion estimate for the face frames.")
    if not opts.emotion_enabled:
        notes.append("Emotion feedback is switched off.")
    dom_p = _num(fs.get("dominant_probability")) if dominant else None
    conf = _num(fs.get("mean_confidence")) if dominant else None
    if dominant and conf is not None and conf < opts.emotion_confidence_floor:
        notes.append(f"Emotion estimates are low-confidence (mean {conf:.2f}): treat them as uncertain.")

    return {
        "answer_id": str(answer.get("_id", "")),
        "index": answer.get("index"),
        "question": answer.get("question", ""),
        "status": status,
        "grade": grade_out,
        "evidence": evidence,
        "metrics": {
            "wpm": wpm,
            "pace_band": band,
            "pace_range_wpm": (opts.pace_low_wpm, opts.pace_high_wpm),
            "word_count": len(words) if has_speech else None,
            "filler_count": len(filler_list) if has_speech and analysed else None,
            "fillers": filler_list,
            "pause_count": len(pauses) if has_speech and analysed else None,
            "longest_pause_s": max((float(p["duration"]) for p in pauses), default=None),
            "face_ratio": face_ratio,
            "eye_contact_ratio": eye_ratio,
            "dominant_emotion": dominant,
            "dominant_probability": dom_p,
            "emotion_confidence": conf,
        },
        "advice": advice,
        "missing": missing,
        "notes": notes,
    }


# --------------------------------------------------------------------------- session header


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M") + (" UTC" if value.tzinfo is None or value.utcoffset() == 0 else "")
    return str(value or "")


def session_label(row: Doc) -> str:
    """One line per session for a picker: candidate · role · date · grade."""
    grade = _num(row.get("grade"))
    parts = [str(row.get("candidate") or "?"), str(row.get("role") or ""), _when(row.get("started_at")),
             f"{_pct(grade)} {row.get('band') or ''}".strip() if grade is not None else "no grade"]
    return " · ".join(p for p in parts if p)


def session_header(session: Doc, answers: Sequence[Doc] = ()) -> dict[str, Any]:
    grade = _num(session.get("grade"))
    graded = [a for a in answers if _num((a.get("grade") or {}).get("score")) is not None]
    return {
        "candidate": session.get("candidate") or "?",
        "role": session.get("role") or "",
        "date": _when(session.get("started_at")),
        "status": session.get("status") or "",
        "grade": grade,
        "grade_text": f"{_pct(grade)}" if grade is not None else "no grade",
        "band": session.get("band"),
        "flags": list(session.get("flags") or []),
        "answers": len(answers),
        "graded_answers": len(graded),
    }

