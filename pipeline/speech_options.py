"""``SpeechMetricsOptions``: the thresholds of the delivery metrics, shared by the word metrics
(``pipeline.speech_metrics``) and the pitch/energy track (``pipeline.prosody``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.settings_sections import SpeechSettings

if TYPE_CHECKING:
    from pipeline.settings import Settings

Word = Mapping[str, Any]
_DEFAULT = SpeechSettings()  # the defaults are written once, in the settings


@dataclass(frozen=True)
class SpeechMetricsOptions:
    filler_words: tuple[str, ...] = _DEFAULT.filler_words
    pause_seconds: float = _DEFAULT.pause_seconds
    pace_window_seconds: float = _DEFAULT.pace_window_seconds
    pace_low_wpm: float = _DEFAULT.pace_low_wpm
    pace_high_wpm: float = _DEFAULT.pace_high_wpm
    # Not settings: fixed properties of the measurement.
    pace_step_seconds: float = 1.0  # hop of the sliding pace window
    min_pace_seconds: float = 3.0  # a shorter stretch of speech gives no words-per-minute figure
    hop_seconds: float = 0.05  # pitch/energy track resolution
    pitch_min_hz: float = 65.0
    pitch_max_hz: float = 400.0
    yin_threshold: float = 0.2  # cumulative-mean-normalised difference below this = voiced
    voiced_min_db: float = -50.0  # frames quieter than this are never called voiced

    @classmethod
    def from_settings(cls, settings: Settings) -> SpeechMetricsOptions:
        return cls(
            filler_words=tuple(settings.speech.filler_words),
            pause_seconds=settings.speech.pause_seconds,
            pace_window_seconds=settings.speech.pace_window_seconds,
            pace_low_wpm=settings.speech.pace_low_wpm,
            pace_high_wpm=settings.speech.pace_high_wpm,
        )
