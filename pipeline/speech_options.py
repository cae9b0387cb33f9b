"""``SpeechMetricsOptions``: the thresholds of the delivery metrics, shared by the word metrics
(``pipeline.speech_metrics``) and the pitch/energy track (``pipeline.prosody``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.settings import DEFAULT_FILLERS

if TYPE_CHECKING:
    from pipeline.settings import Settings

Word = Mapping[str, Any]


@dataclass(frozen=True)
class SpeechMetricsOptions:
    filler_words: tuple[str, ...] = DEFAULT_FILLERS
    pause_seconds: float = 1.0
    pace_window_seconds: float = 10.0
    pace_low_wpm: float = 110.0
    pace_high_wpm: float = 170.0
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
            filler_words=tuple(settings.filler_words),
            pause_seconds=settings.pause_seconds,
            pace_window_seconds=settings.pace_window_seconds,
            pace_low_wpm=settings.pace_low_wpm,
            pace_high_wpm=settings.pace_high_wpm,
        )
