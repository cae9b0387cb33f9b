"""The Plotly timeline of one answer: emotion, eye contact and head movement, head pose (degrees),
words/fillers/pauses/key points, pace, pitch and energy, on one shared x axis (seconds since the answer began)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pipeline.axis import AnswerClock, Doc, answer_clock, answer_fillers, answer_pauses, key_point_rows, num
from pipeline.frames import FrameArrays, frame_arrays
from pipeline.report import ReportOptions
from pipeline.safe_text import plain_html
from pipeline.schemas import EMOTIONS
from pipeline.signal import (
    MIN_HOLE_SECONDS,
    band_polygons,
    bucket_mean,
    find_holes,
    gappy,
    insert_gaps,
    intervals_polygon,
    median_step,
    merge_intervals,
    runs,
    smooth_segments,
)
from pipeline.star_view import star_section

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
    "head": "Head pose (degrees)",
    "speech": "Words, fillers, pauses, key points",
    "pace": "Speaking pace",
    "voice": "Pitch and energy",
}
ROW_HEIGHTS = {"emotion": 0.22, "gaze": 0.16, "head": 0.14, "speech": 0.28, "pace": 0.16, "voice": 0.18}
HEAD_TRACES = (("head_yaw", "Head yaw (°)", "#1f77b4", True), ("head_pitch", "Head pitch (°)", "#d62728", True),
               ("head_roll", "Head roll (°)", "#7f7f7f", True), ("gaze_yaw", "Gaze yaw (°)", "#17becf", False),
               ("gaze_pitch", "Gaze pitch (°)", "#e377c2", False))  # gaze: in the legend, shown on a click


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

    Rows: emotion (when enabled), eye contact + head movement, head pose (only when the frames
    measured it: older documents have none, never zeros), words/fillers/pauses/key points, pace,
    pitch + energy. Stored documents are read, never modified.
    """
    opts = options or ReportOptions()
    fa = frame_arrays(frames)
    clock = answer_clock(answer, float(fa.t_ms[0]) if len(fa) else None)
    has_pose = bool(np.isfinite(np.column_stack([fa.head_yaw, fa.head_pitch, fa.head_roll])).any()) if len(fa) else False
    names = ((["emotion"] if opts.emotion_enabled else []) + ["gaze"] + (["head"] if has_pose else [])
             + ["speech", "pace", "voice"])
    rows = _Rows(names)
    fig = make_subplots(
        rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.035,
        row_heights=[ROW_HEIGHTS[n] for n in names],
        subplot_titles=[ROW_TITLES[n] for n in names],
        specs=[[{"secondary_y": n in ("gaze", "voice")}] for n in names],
    )
    step = max(opts.max_display_points, 2)
    x_frames = (fa.t_ms - clock.origin_ms) / 1000.0 if len(fa) and clock.origin_ms is not None else np.zeros(0)
    holes = find_holes(x_frames)
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
    _star_band(fig, rows, answer, clock)
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
            xb, yb = insert_gaps(xb, yb, holes)
            probs, conf, unc = yb[:, : len(EMOTIONS)], yb[:, len(EMOTIONS)], yb[:, len(EMOTIONS) + 1]
            pad = median_step(xb) / 2
            upper = np.cumsum(probs, axis=1)
            lower = upper - probs
            for j, name in enumerate(EMOTIONS):
                px, py = band_polygons(xb, lower[:, j], upper[:, j], pad)
                fig.add_trace(go.Scatter(
                    x=px, y=py, name=name, fill="toself", mode="lines", line={"width": 0},
                    fillcolor=EMOTION_COLOURS[name], hoverinfo="skip",
                ), row=r_em, col=1)
            # One invisible line carries the hover: every probability plus the model's confidence.
            dom = np.array(EMOTIONS)[np.argmax(np.nan_to_num(probs, nan=-1), axis=1)]
            custom = np.column_stack([np.round(probs, 3), np.round(conf, 3), np.round(unc, 2)])
            fig.add_trace(go.Scatter(
                x=gappy(xb), y=gappy(upper[:, -1], 3), mode="lines", line={"width": 0}, showlegend=False,
                name="emotion", text=[None if gap else str(d) for gap, d in zip(np.isnan(probs[:, 0]), dom, strict=True)],
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
    dt = median_step(x)
    missing = [(float(x[a]) - dt / 2, float(x[b]) + dt / 2) for a, b in runs(~fa.face)]
    missing += [(float(a), float(b)) for a, b in holes]
    # Video that started late or stopped early is missing evidence too.
    if x[0] > MIN_HOLE_SECONDS:
        missing.append((0.0, float(x[0]) - dt / 2))
    if end_s is not None and end_s - x[-1] > MIN_HOLE_SECONDS:
        missing.append((float(x[-1]) + dt / 2, end_s))
    span = (x[-1] - x[0]) if len(x) > 1 else 0.0
    merged = merge_intervals(missing, span / step if len(x) > step else 0.0)
    if merged:
        px, py = intervals_polygon(merged, 0.0, 1.0)
        fig.add_trace(go.Scatter(x=px, y=py, fill="toself", mode="lines", line={"width": 0},
                                 fillcolor="rgba(120,120,120,0.25)", name="no face / no video",
                                 hoveron="fills", hoverinfo="name"), row=r_g, col=1)
    if fa.face.any():
        xb, yb = bucket_mean(x, np.column_stack([fa.gaze_score, fa.eye_contact, fa.movement]), step, 0.5)
        xb, yb = insert_gaps(xb, yb, holes)
        fig.add_trace(go.Scatter(x=gappy(xb), y=gappy(yb[:, 1], 3), name="Eye contact", mode="lines",
                                 line={"color": "#2ca02c", "shape": "hv", "width": 3}, connectgaps=False,
                                 fill="tozeroy", fillcolor="rgba(44,160,44,0.12)",
                                 hovertemplate="eye contact on %{y:.0%} of frames<extra></extra>"),
                      row=r_g, col=1)
        fig.add_trace(go.Scatter(x=gappy(xb), y=gappy(yb[:, 0]), name="eye contact score", mode="lines",
                                 line={"color": "#98df8a", "width": 1}, connectgaps=False,
                                 customdata=gappy(yb[:, 1], 2),
                                 hovertemplate="eye contact score %{y:.2f} (on %{customdata:.0%} of frames)<extra></extra>"),
                      row=r_g, col=1)
        fig.add_trace(go.Scatter(x=gappy(xb), y=gappy(yb[:, 2], 4), name="head movement", mode="lines",
                                 line={"color": "#ff7f0e", "width": 1}, connectgaps=False,
                                 hovertemplate="head movement %{y:.3f}<extra></extra>"),
                      row=r_g, col=1, secondary_y=True)
    else:
        _note(fig, rows, "gaze", "No face found: no eye contact or head movement")
    fig.update_yaxes(range=[0, 1.02], title_text="score", row=r_g, col=1, secondary_y=False)
    fig.update_yaxes(title_text="movement", rangemode="tozero", row=r_g, col=1, secondary_y=True, showgrid=False)
    _head_row(fig, rows, fa, x, holes, step)


def _head_row(fig: go.Figure, rows: _Rows, fa: FrameArrays, x: np.ndarray, holes: np.ndarray, step: int) -> None:
    """Head yaw, pitch and roll (and the gaze direction, off by default) in degrees; gaps where not measured."""
    r = rows.row("head")
    if r is None:
        return
    cols = np.column_stack([getattr(fa, key) for key, _, _, _ in HEAD_TRACES])
    xb, yb = bucket_mean(x, cols, step, 0.5)
    xb, yb = insert_gaps(xb, yb, holes)
    for j, (_, name, colour, shown) in enumerate(HEAD_TRACES):
        if not np.isfinite(yb[:, j]).any():
            continue  # e.g. no gaze direction with the frontal-face proxy
        fig.add_trace(go.Scatter(x=gappy(xb), y=gappy(yb[:, j], 1), name=name, mode="lines", connectgaps=False,
                                 line={"color": colour, "width": 2 if shown else 1, "dash": "solid" if shown else "dot"},
                                 visible=True if shown else "legendonly",
                                 hovertemplate=f"{name.split(' (')[0].lower()} %{{y:.0f}}°<extra></extra>"),
                      row=r, col=1)
    fig.add_hline(y=0, line={"color": "#bbb", "width": 1}, row=r, col=1)
    fig.update_yaxes(title_text="degrees", ticksuffix="°", row=r, col=1)


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
        px, py = intervals_polygon(spans, -1.5, 0.5)
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
    kp_rows = key_point_rows(answer, clock)
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


STAR_COLOURS = {"Situation": "rgba(31,119,180,0.13)", "Task": "rgba(148,103,189,0.15)",
                "Action": "rgba(44,160,44,0.14)", "Result": "rgba(255,127,14,0.18)"}


def _star_band(fig: go.Figure, rows: _Rows, answer: Doc, clock: AnswerClock) -> None:
    """STAR parts of a behavioural answer shaded behind the speech row (answer axis), one legend entry each."""
    r = rows.row("speech")
    words = [w for w in (answer.get("words") or []) if str(w.get("word", "")).strip()]
    star, _, _ = star_section(answer, clock, bool(words))
    if r is None or star is None:
        return
    top = max(0.6, len(key_point_rows(answer, clock)) + 0.5)
    for part in star["parts"]:
        if not part["spans"]:
            continue
        px, py = intervals_polygon(part["spans"], -1.6, top)
        conf = "" if part["confidence"] is None else f" (confidence {part['confidence']:.2f})"
        fig.add_trace(go.Scatter(
            x=px, y=py, fill="toself", mode="lines", line={"width": 0}, fillcolor=STAR_COLOURS[part["part"]],
            name=f"STAR {part['part']}", hoveron="fills", legendgroup="star",
            text=plain_html(f"{part['part']} {part['start_s']:.1f}–{part['end_s']:.1f} s{conf}: "
                            f"{part['text'][:160]}"),
            hoverinfo="text",
        ), row=r, col=1)


def _voice_rows(fig: go.Figure, rows: _Rows, answer: Doc, clock: AnswerClock, opts: ReportOptions, step: int) -> float:
    metrics = answer.get("metrics") or {}
    xmax = 0.0
    r = rows.row("pace")
    assert r is not None
    track = [p for p in (metrics.get("pace_track") or []) if num(p.get("t")) is not None]
    fig.add_hrect(y0=opts.pace_low_wpm, y1=opts.pace_high_wpm, fillcolor="rgba(44,160,44,0.08)", line_width=0,
                  row=r, col=1)
    if track:
        px = np.array([clock.audio_x(p["t"]) for p in track])
        py = np.array([num(p.get("wpm")) if num(p.get("wpm")) is not None else np.nan for p in track])
        xb, yb = bucket_mean(px, py, step)
        fig.add_trace(go.Scatter(x=gappy(xb), y=gappy(yb, 1), name="pace (wpm)", mode="lines",
                                 line={"color": "#9467bd"}, connectgaps=False,
                                 hovertemplate="pace %{y:.0f} wpm<extra></extra>"), row=r, col=1)
        xmax = float(px.max())
    else:
        _note(fig, rows, "pace", "No pace: too little speech to measure")
    fig.update_yaxes(title_text="wpm", rangemode="tozero", row=r, col=1)

    r = rows.row("voice")
    assert r is not None
    pro: Mapping[str, Any] = metrics.get("prosody") or {}
    t = list(pro.get("t") or [])
    if t:
        tx = clock.audio_offset_s + np.asarray(t, dtype=float)
        pitch = _track(pro.get("pitch_hz"), len(t))
        energy = _track(pro.get("energy_db"), len(t))
        n = min(len(tx), len(pitch), len(energy))
        # Unvoiced stretches stay gaps; a bucket shows the mean of its voiced frames.
        xb, yb = bucket_mean(tx[:n], np.column_stack([pitch[:n], energy[:n]]), step, 0.0)
        fig.add_trace(go.Scatter(x=gappy(xb), y=gappy(yb[:, 0], 1), name="pitch (Hz)", mode="lines",
                                 line={"color": "#e377c2"}, connectgaps=False,
                                 hovertemplate="pitch %{y:.0f} Hz<extra></extra>"), row=r, col=1)
        fig.add_trace(go.Scatter(x=gappy(xb), y=gappy(yb[:, 1], 1), name="energy (dB)", mode="lines",
                                 line={"color": "#7f7f7f", "width": 1}, connectgaps=False,
                                 hovertemplate="energy %{y:.0f} dB<extra></extra>"), row=r, col=1, secondary_y=True)
        xmax = max(xmax, float(tx.max()))
    else:
        _note(fig, rows, "voice", "No pitch or energy stored (no audio analysis)")
    fig.update_yaxes(title_text="Hz", row=r, col=1, secondary_y=False)
    fig.update_yaxes(title_text="dB", row=r, col=1, secondary_y=True, showgrid=False)
    return xmax


def _track(values: Sequence[float | None] | None, n: int) -> np.ndarray:
    """A stored prosody track as floats, NaN where unvoiced (None), at most ``n`` long."""
    items = list(values) if values else [None] * n
    return np.array([np.nan if v is None else float(v) for v in items[:n]], dtype=float)
