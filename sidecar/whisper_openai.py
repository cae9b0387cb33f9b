"""The openai-whisper engine (the reference): a CTranslate2 -> openai-whisper converter, so it runs
on the same packaged weights as faster-whisper, and the engine adapter behind ``WhisperEngine``.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sidecar.asr_engine import DecodedSegment, hallucinated, has_speech, make_segment, make_word
from sidecar.asr_weights import PACKAGED_MODELS, AsrError, WeightsMismatchError, sha256_file, verify_file

if TYPE_CHECKING:
    import torch

    from pipeline.settings_sections import AsrSettings

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


def openai_checkpoint(options: AsrSettings, ct2: Path, packaged: bool) -> Path:
    """The converted checkpoint of CTranslate2 folder ``ct2`` in the cache: converted once per source
    model (keyed by the model.bin hash), verified by its stamp afterwards."""
    digest = PACKAGED_MODELS[options.model]["files"]["model.bin"] if packaged else sha256_file(ct2 / "model.bin")
    out = options.cache / f"openai-whisper-{options.model if packaged else 'custom'}-{digest[:12]}.pt"
    stamp = out.with_suffix(".pt.sha256")
    if out.is_file() and stamp.is_file():
        try:
            if options.verify_weights:
                verify_file(out, stamp.read_text().strip())
            return out
        except WeightsMismatchError:
            pass  # a damaged cache copy: convert again from the verified source
    convert_ct2_to_openai_whisper(ct2, out)
    stamp.write_text(sha256_file(out) + "\n")
    return out


class OpenAIWhisperEngine:
    """openai-whisper (PyTorch) on a converted checkpoint."""

    def __init__(self, checkpoint: Path, threads: int) -> None:
        try:
            self.model: Any = load_openai_whisper(checkpoint, threads)
        except (RuntimeError, ValueError, OSError, KeyError) as exc:
            raise AsrError(f"{checkpoint}: openai-whisper cannot load it ({exc})") from exc

    def warm_up(self, audio: np.ndarray, language: str | None) -> None:
        import whisper
        import whisper.timing

        whisper.timing.dtw_cpu(np.zeros((4, 4)))  # compile numba's DTW now, not on the first answer
        whisper.transcribe(self.model, audio, language=language, fp16=False, word_timestamps=True,
                           temperature=0.0, verbose=None)

    def transcribe(
        self, audio: np.ndarray, offset: float, options: AsrSettings, hotwords: tuple[str, ...], language: str | None,
        first_window_only: bool = False,
    ) -> tuple[list[DecodedSegment], str | None, float | None]:
        """Decodes every window (``first_window_only`` is faster-whisper's saving only)."""
        import whisper

        if options.vad_filter and not has_speech(audio):
            return [], None, None  # openai-whisper has no VAD: silence would come back as "Thank you."
        result = whisper.transcribe(
            self.model,
            audio,
            language=language,
            initial_prompt=options.prompt(hotwords),
            word_timestamps=True,
            fp16=False,
            beam_size=options.beam_size if options.beam_size > 1 else None,
            verbose=None,
        )
        out: list[DecodedSegment] = []
        for seg in result.get("segments", []):
            if hallucinated(options, seg.get("avg_logprob", 0.0), seg.get("no_speech_prob", 0.0)):
                continue
            words = [
                make_word(w["word"], w["start"], w["end"], w.get("probability", 0.0), offset)
                for w in seg.get("words", [])
                if w["word"].strip()
            ]
            out.append(make_segment(seg.get("text", ""), seg["start"], seg["end"], offset, words))
        language_out: str | None = result.get("language")
        return out, language_out, None
