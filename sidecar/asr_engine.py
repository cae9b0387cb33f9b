"""What every Whisper engine returns and the ``WhisperEngine`` Protocol they implement.

Holds the word / segment records, ``Transcript``, and the default engine (faster-whisper).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

import numpy as np

from sidecar.asr_weights import AsrError

if TYPE_CHECKING:
    from pipeline.settings_sections import AsrSettings


class AsrWord(TypedDict):
    """One recognised word; times in seconds (from the start of the audio, plus the offset)."""

    word: str
    start: float
    end: float
    probability: float


class StreamWord(AsrWord):
    """A streamed word: seconds since the answer began, plus epoch-ms on the capture clock."""

    t_ms: int
    end_ms: int


class SegmentInfo(TypedDict):
    start: float
    end: float
    text: str
    n_words: int


class DecodedSegment(TypedDict):
    start: float
    end: float
    text: str
    words: list[AsrWord]


@dataclass
class Transcript:
    """Words are ``{"word", "start", "end", "probability"}`` in seconds (streaming adds epoch-ms ``t_ms``/``end_ms``)."""

    words: list[AsrWord]
    text: str
    language: str | None
    duration: float
    segments: list[SegmentInfo] = field(default_factory=list)
    engine: str = ""
    model: str = ""
    elapsed_s: float = 0.0
    # Seconds into the audio where decoding stopped early (``first_window_only``: Whisper's first
    # window ended before the audio did); None when all of it was decoded.
    stopped_at: float | None = None

    @property
    def word_texts(self) -> list[str]:
        return [w["word"] for w in self.words]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class WhisperEngine(Protocol):
    """A loaded Whisper model. Options come with each call, so recognizers may share one engine."""

    model: Any

    def warm_up(self, audio: np.ndarray, language: str | None) -> None:
        """Decode ``audio`` once so the first real answer pays no set-up cost."""

    def transcribe(
        self, audio: np.ndarray, offset: float, options: AsrSettings, hotwords: tuple[str, ...], language: str | None,
        first_window_only: bool = False,
    ) -> tuple[list[DecodedSegment], str | None, float | None]:
        """Segments with word timestamps (seconds + ``offset``), the detected language, and where
        decoding stopped early (seconds into ``audio``) when ``first_window_only`` cut it short."""


def make_word(text: str, start: float, end: float, probability: float, offset: float) -> AsrWord:
    return {
        "word": text.strip(),
        "start": round(float(start) + offset, 3),
        "end": round(float(end) + offset, 3),
        "probability": round(float(probability), 4),
    }


def make_segment(text: str, start: float, end: float, offset: float, words: list[AsrWord]) -> DecodedSegment:
    return {"start": round(float(start) + offset, 3), "end": round(float(end) + offset, 3), "text": text.strip(),
            "words": words}


def hallucinated(options: AsrSettings, avg_logprob: float, no_speech_prob: float) -> bool:
    """A segment this unsure is what Whisper invents after the last word."""
    return avg_logprob < options.drop_logprob_below and no_speech_prob > options.drop_no_speech_above


def has_speech(audio: np.ndarray) -> bool:
    """Silero VAD (shipped inside faster-whisper) says there is some speech."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return bool(get_speech_timestamps(audio, VadOptions(min_silence_duration_ms=500)))


class _SecondWindowError(Exception):
    """Raised from faster-whisper's window loop to stop it before a second encoder pass."""


class FasterWhisperEngine:
    """faster-whisper (CTranslate2) on a CTranslate2 Whisper folder: the default engine."""

    def __init__(self, folder: Path, compute_type: str, threads: int) -> None:
        from faster_whisper import WhisperModel

        try:
            self.model: Any = WhisperModel(
                str(folder), device="cpu", compute_type=compute_type, cpu_threads=threads, local_files_only=True
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise AsrError(f"{folder}: faster-whisper cannot load it ({exc})") from exc
        # Whisper's encoder costs the same for 1 s as for its whole 30 s window, and most of a live
        # part's decoding time is encoder. After a window, faster-whisper seeks to its last word and
        # encodes the rest again, often a fraction of a second of right context: a whole extra pass.
        # ``first_window_only`` refuses that pass (the streaming caller hears the rest with its next part).
        self._encode = self.model.encode
        self._passes = threading.local()
        self.model.encode = self._counted_encode

    def _counted_encode(self, features: Any) -> Any:
        left: int | None = getattr(self._passes, "left", None)
        if left is not None:
            if left <= 0:
                raise _SecondWindowError
            self._passes.left = left - 1
        return self._encode(features)

    def warm_up(self, audio: np.ndarray, language: str | None) -> None:
        segments, _ = self.model.transcribe(audio, language=language, beam_size=1, word_timestamps=True,
                                            vad_filter=False)
        list(segments)

    def transcribe(
        self, audio: np.ndarray, offset: float, options: AsrSettings, hotwords: tuple[str, ...], language: str | None,
        first_window_only: bool = False,
    ) -> tuple[list[DecodedSegment], str | None, float | None]:
        # One pass, plus one for language detection when the language is not given.
        self._passes.left = (1 if language else 2) if first_window_only else None
        out: list[DecodedSegment] = []
        stopped_at: float | None = None
        last_end = 0.0
        try:
            segments, info = self.model.transcribe(
                audio,
                language=language,
                beam_size=options.beam_size,
                initial_prompt=options.initial_prompt,
                hotwords=" ".join(hotwords) if hotwords else None,
                word_timestamps=True,
                vad_filter=options.vad_filter,
                vad_parameters={"min_silence_duration_ms": 500},
            )
            try:
                for seg in segments:
                    ends = [float(w.end) for w in seg.words or []]  # faster-whisper resumes after the last word
                    last_end = max(last_end, max(ends) if ends else float(seg.end))
                    if hallucinated(options, seg.avg_logprob, seg.no_speech_prob):
                        continue
                    words = [make_word(w.word, w.start, w.end, w.probability, offset)
                             for w in seg.words or [] if w.word.strip()]
                    out.append(make_segment(seg.text, seg.start, seg.end, offset, words))
            except _SecondWindowError:
                stopped_at = round(last_end, 3)  # the first window's segments all came out before the refusal
        finally:
            self._passes.left = None
        return out, info.language, stopped_at
