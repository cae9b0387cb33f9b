"""Speech recognition for the sidecar worker: ``SpeechRecognizer`` and its ``AsrOptions``.

One ``transcribe(audio16k, offset) -> Transcript`` call with word timestamps over faster-whisper (default)
or openai-whisper; weights: ``sidecar.asr_weights``, streaming: ``sidecar.asr_stream``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.records import SAMPLE_RATE
from sidecar.asr_backlog import AudioBacklog, PendingAudio
from sidecar.asr_engine import (
    AsrWord,
    DecodedSegment,
    FasterWhisperEngine,
    SegmentInfo,
    StreamWord,
    Transcript,
    WhisperEngine,
)
from sidecar.asr_stream import StreamingTranscriber
from sidecar.asr_weights import (
    PACKAGED_MODELS,
    AsrError,
    WeightsMismatchError,
    default_cache_dir,
    packaged_ct2_dir,
    sha256_file,
    verify_file,
)
from sidecar.whisper_openai import (
    OpenAIWhisperEngine,
    convert_ct2_to_openai_whisper,
    load_openai_whisper,
    openai_checkpoint,
    read_ct2_model,
)

if TYPE_CHECKING:
    from pipeline.settings import Settings

__all__ = [
    "DEFAULT_FILLER_PROMPT",
    "ENGINES",
    "PACKAGED_MODELS",
    "AsrError",
    "AsrOptions",
    "AsrWord",
    "AudioBacklog",
    "PendingAudio",
    "SegmentInfo",
    "SpeechRecognizer",
    "StreamWord",
    "StreamingTranscriber",
    "Transcript",
    "WeightsMismatchError",
    "WhisperEngine",
    "convert_ct2_to_openai_whisper",
    "load_openai_whisper",
    "packaged_ct2_dir",
    "read_ct2_model",
    "sha256_file",
    "verify_file",
]

ENGINES = ("faster-whisper", "openai-whisper")

# Short on purpose: a prompt that already contains fillers makes Whisper keep "um"/"uh";
# long prompts make it loop or copy the prompt (MODELS.md). No "like"/"you know": Whisper
# keeps those anyway, and with them in the prompt tiny.en starts parts with a made-up "Like,".
DEFAULT_FILLER_PROMPT = "Um, uh, hmm, so, I mean, um."


@dataclass(frozen=True)
class AsrOptions:
    engine: str = "faster-whisper"
    model: str = "tiny.en"  # "tiny.en" | "base" (packaged) | a CTranslate2 folder | an openai-whisper .pt
    threads: int = 2
    chunk_seconds: float = 8.0
    language: str | None = "en"  # None lets a multilingual model detect the language
    initial_prompt: str | None = DEFAULT_FILLER_PROMPT
    hotwords: tuple[str, ...] = ()  # names the candidate is likely to say ("ComfyUI", "Kubernetes")
    beam_size: int = 5
    compute_type: str = "int8"
    vad_filter: bool = True
    cache_dir: Path | None = None  # joined / converted weights; default ~/.cache/mockai/asr
    # A segment this unsure (mean token log-prob below, no-speech probability above) is
    # dropped: it is what Whisper invents after the last word ("I'll see you in the next video").
    drop_logprob_below: float = -1.0
    drop_no_speech_above: float = 0.3
    verify_weights: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise AsrError(f"unknown ASR engine {self.engine!r}; choose one of {ENGINES}")
        if self.chunk_seconds <= 0 or self.threads < 1 or self.beam_size < 1:
            raise AsrError("chunk_seconds must be > 0, threads and beam_size >= 1")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> AsrOptions:
        values: dict[str, Any] = {
            "engine": settings.asr_engine,
            "model": settings.asr_model,
            "threads": settings.asr_threads,
            "chunk_seconds": settings.asr_chunk_seconds,
            "language": settings.asr_language or None,
            "initial_prompt": settings.asr_initial_prompt or None,
            "hotwords": tuple(settings.asr_hotwords),
            "beam_size": settings.asr_beam_size,
            "cache_dir": settings.asr_cache_dir,
        }
        values.update(overrides)
        return cls(**values)

    @property
    def cache(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()

    def prompt(self, hotwords: tuple[str, ...] | None = None) -> str | None:
        """Filler prompt, plus the hint words for engines without a hotwords option."""
        words = self.hotwords if hotwords is None else hotwords
        parts = [p for p in (self.initial_prompt, ", ".join(words) if words else None) if p]
        return " ".join(parts) or None


class SpeechRecognizer:
    """One loaded Whisper model (load lazily; one per worker process)."""

    def __init__(self, options: AsrOptions | None = None) -> None:
        self.options = options or AsrOptions()
        self._engine: WhisperEngine | None = None
        self.model_path: Path | None = None
        self.timings: dict[str, float] = {}

    # ---- loading

    def _resolve(self) -> Path:
        """Where the weights for ``options.model`` live, verified and prepared for the engine."""
        opts = self.options
        packaged = opts.model in PACKAGED_MODELS
        if packaged:
            ct2 = packaged_ct2_dir(opts.model, opts.cache, verify=opts.verify_weights)
        else:
            path = Path(opts.model).expanduser()
            if not path.exists():
                raise AsrError(
                    f"ASR model {opts.model!r} is neither packaged ({', '.join(PACKAGED_MODELS)}) nor an existing path "
                    "(nothing is downloaded at run time)"
                )
            if opts.engine == "openai-whisper" and path.is_file():
                return path
            if not (path / "model.bin").is_file():
                raise AsrError(f"{path}: no model.bin (expected a CTranslate2 Whisper folder)")
            ct2 = path
        if opts.engine == "faster-whisper":
            return ct2
        return openai_checkpoint(opts, ct2, packaged)

    def load(self) -> dict[str, float]:
        if self._engine is not None:
            return self.timings
        t0 = time.perf_counter()
        self.model_path = self._resolve()
        t1 = time.perf_counter()
        if self.options.engine == "faster-whisper":
            self._engine = FasterWhisperEngine(self.model_path, self.options.compute_type, self.options.threads)
        else:
            self._engine = OpenAIWhisperEngine(self.model_path, self.options.threads)
        self.timings = {"resolve_verify_s": t1 - t0, "load_s": time.perf_counter() - t1}
        return self.timings

    def _loaded(self) -> WhisperEngine:
        self.load()
        assert self._engine is not None  # load() sets it or raises
        return self._engine

    def warm_up(self) -> dict[str, float]:
        """Load, then decode 1 s of low noise once so the first real answer pays no set-up cost."""
        t0 = time.perf_counter()
        timings = dict(self.load())
        dummy = (np.random.default_rng(0).standard_normal(SAMPLE_RATE) * 0.01).astype(np.float32)
        t1 = time.perf_counter()
        self._loaded().warm_up(dummy, self._language())
        timings["first_run_s"] = time.perf_counter() - t1
        timings["total_s"] = time.perf_counter() - t0
        self.timings = timings
        return timings

    # ---- transcription

    def _language(self) -> str | None:
        lang = self.options.language
        if lang is None and self.options.model == "tiny.en":
            return "en"
        return lang

    def transcribe(
        self,
        audio16k: np.ndarray | str | os.PathLike[str],
        offset: float = 0.0,
        *,
        hotwords: tuple[str, ...] | None = None,
    ) -> Transcript:
        """Transcribe 16 kHz mono float32 audio (or a media file); word times are seconds + ``offset``."""
        if not isinstance(audio16k, np.ndarray):
            from pipeline.media import load_audio

            audio16k = load_audio(audio16k, rate=SAMPLE_RATE)
        audio = np.ascontiguousarray(audio16k, dtype=np.float32).reshape(-1)
        duration = len(audio) / SAMPLE_RATE
        t0 = time.perf_counter()
        engine = self._loaded()
        segments: list[DecodedSegment] = []
        language = self._language()
        hot = self.options.hotwords if hotwords is None else tuple(hotwords)
        if len(audio) >= SAMPLE_RATE // 10:
            segments, detected = engine.transcribe(audio, offset, self.options, hot, language)
            language = detected or language
        return Transcript(
            words=[w for seg in segments for w in seg["words"]],
            text=" ".join(seg["text"] for seg in segments if seg["text"]),
            segments=[
                {"start": seg["start"], "end": seg["end"], "text": seg["text"], "n_words": len(seg["words"])}
                for seg in segments
            ],
            language=language,
            duration=round(duration, 3),
            engine=self.options.engine,
            model=self.options.model,
            elapsed_s=round(time.perf_counter() - t0, 3),
        )
