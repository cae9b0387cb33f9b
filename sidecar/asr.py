"""Speech recognition for the sidecar worker: ``SpeechRecognizer`` and its ``AsrSettings``.

One ``transcribe(audio16k, offset) -> Transcript`` call with word timestamps over faster-whisper (default)
or openai-whisper; weights: ``sidecar.asr_weights``, streaming: ``sidecar.asr_stream``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from pipeline.records import SAMPLE_RATE
from pipeline.settings_sections import ASR_ENGINES, AsrSettings
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

__all__ = [
    "ENGINES",
    "PACKAGED_MODELS",
    "AsrError",
    "AsrSettings",
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

ENGINES = ASR_ENGINES


class SpeechRecognizer:
    """One loaded Whisper model (load lazily; one per worker process)."""

    def __init__(self, options: AsrSettings | None = None) -> None:
        self.options = options or AsrSettings()
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
        first_window_only: bool = False,
    ) -> Transcript:
        """Transcribe 16 kHz mono float32 audio (or a media file); word times are seconds + ``offset``.

        ``first_window_only`` stops after Whisper's first 30 s window: the transcript's ``stopped_at``
        then says where the words end when audio after them was left undecoded (streaming parts).
        """
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
        stopped_at: float | None = None
        if len(audio) >= SAMPLE_RATE // 10:
            segments, detected, stopped_at = engine.transcribe(audio, offset, self.options, hot, language,
                                                               first_window_only)
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
            stopped_at=stopped_at,
        )
