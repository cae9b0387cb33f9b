"""What every Whisper engine returns and the ``WhisperEngine`` Protocol they implement.

Holds the word / segment records, ``Transcript``, and the default engine (faster-whisper).
"""

from __future__ import annotations

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
        self, audio: np.ndarray, offset: float, options: AsrSettings, hotwords: tuple[str, ...], language: str | None
    ) -> tuple[list[DecodedSegment], str | None]:
        """Segments with word timestamps (seconds + ``offset``) and the detected language."""


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

    def warm_up(self, audio: np.ndarray, language: str | None) -> None:
        segments, _ = self.model.transcribe(audio, language=language, beam_size=1, word_timestamps=True,
                                            vad_filter=False)
        list(segments)

    def transcribe(
        self, audio: np.ndarray, offset: float, options: AsrSettings, hotwords: tuple[str, ...], language: str | None
    ) -> tuple[list[DecodedSegment], str | None]:
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
        out: list[DecodedSegment] = []
        for seg in segments:
            if hallucinated(options, seg.avg_logprob, seg.no_speech_prob):
                continue
            words = [make_word(w.word, w.start, w.end, w.probability, offset) for w in seg.words or [] if w.word.strip()]
            out.append(make_segment(seg.text, seg.start, seg.end, offset, words))
        return out, info.language
