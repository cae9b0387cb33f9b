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

from pipeline.settings import Settings, default_settings

# --------------------------------------------------------------------------- options


_DEFAULT = default_settings()  # the defaults are written once, in the settings


@dataclass(frozen=True)
class ReportOptions:
    """What the report and the card need from several settings sections (defaults: the settings')."""

    emotion_smoothing_window: int = _DEFAULT.emotion.smoothing_window
    pause_seconds: float = _DEFAULT.speech.pause_seconds
    emotion_enabled: bool = _DEFAULT.emotion.enabled
    max_display_points: int = _DEFAULT.report.max_points  # per trace; display only
    pace_low_wpm: float = _DEFAULT.speech.pace_low_wpm
    pace_high_wpm: float = _DEFAULT.speech.pace_high_wpm
    emotion_confidence_floor: float = _DEFAULT.emotion.emotion_confidence_floor
    min_answer_words: int = _DEFAULT.grading.min_answer_words
    filler_words: tuple[str, ...] = _DEFAULT.speech.filler_words
    eye_contact_good: float = _DEFAULT.report.eye_contact_good  # below it the card advises more eye contact
    framing_offset_hint: float = _DEFAULT.report.framing_offset_hint  # median face offset that gets a framing hint
    framing_small_face: float = _DEFAULT.report.framing_small_face  # median face width / picture width: "far"
    gaze_away_min_seconds: float = _DEFAULT.report.gaze_away_min_seconds  # shortest look-away named with its time
    # Not settings: fixed choices of the display.
    word_label_limit: int = 80  # more words than this: markers with hover only (labels would overlap)
    gl_min_points: int = 1500  # marker traces this large use WebGL

    @classmethod
    def from_settings(cls, settings: Settings, session_settings: Mapping[str, Any] | None = None) -> ReportOptions:
        """Current settings (so re-tuned thresholds apply to stored sessions); emotion also
        stays off when the session itself was recorded with emotion switched off."""
        snapshot = session_settings or {}
        return cls(
            emotion_smoothing_window=int(settings.emotion.smoothing_window),
            pause_seconds=float(settings.speech.pause_seconds),
            emotion_enabled=bool(settings.emotion.enabled) and bool(snapshot.get("emotion_enabled", True)),
            max_display_points=int(settings.report.max_points),
            pace_low_wpm=float(settings.speech.pace_low_wpm),
            pace_high_wpm=float(settings.speech.pace_high_wpm),
            emotion_confidence_floor=float(settings.emotion.emotion_confidence_floor),
            min_answer_words=int(settings.grading.min_answer_words),
            filler_words=tuple(settings.speech.filler_words),
            eye_contact_good=float(settings.report.eye_contact_good),
            framing_offset_hint=float(settings.report.framing_offset_hint),
            framing_small_face=float(settings.report.framing_small_face),
            gaze_away_min_seconds=float(settings.report.gaze_away_min_seconds),
        )

