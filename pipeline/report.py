"""Session report: the options every view of an answer uses, and the map of the modules behind it.

Pure logic (no Streamlit). The report is built from flat modules: ``pipeline.axis`` (the clock and
speech events), ``pipeline.frames`` (frame columns and summary), ``pipeline.signal`` (display array
helpers), ``pipeline.timeline`` (the Plotly figure) and ``pipeline.card`` (the one card
view-model). Everything is placed on one axis, seconds since the answer began (``answer.started_ms``):

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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.settings import DEFAULT_FILLERS, Settings

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

