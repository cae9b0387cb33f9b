"""Uploaded recordings: size cap, a private temporary copy on disk, plain error messages.

No Streamlit here: the page hands over the uploaded file object (anything with ``read``).
The copy streams in 1 MiB pieces (``UploadedFile.getbuffer()`` would copy the whole upload
in memory first), lives in ``<data_dir>/uploads`` (0700, the file 0600) and is removed as
soon as the analysis is over, also when it fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pipeline.media import MediaError

if TYPE_CHECKING:
    from pipeline.settings import Settings

MB = 1 << 20  # Streamlit's server.maxUploadSize and max_upload_size count in MiB
COPY_CHUNK = 1 << 20
# A copy left behind by a killed server is removed by the next upload after this long.
STALE_UPLOAD_SECONDS = 6 * 3600

SERVER_PROBLEM = ("This file could not be analysed because of a problem on the server; nothing was stored "
                  "for this answer. Try again in a minute.")


class UploadTooLargeError(ValueError):
    """An upload over ``Settings.max_upload_mb``."""

    def __init__(self, size: int, limit_mb: int) -> None:
        super().__init__(f"This file is {size / MB:.1f} MB; uploads can be at most {limit_mb} MB. "
                         "Trim or compress the recording, or upload its audio only.")
        self.size, self.limit_mb = size, limit_mb


def upload_dir(settings: Settings) -> Path:
    """The owner-only folder the temporary copies go into."""
    folder = Path(settings.storage.data_dir) / "uploads"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # an older folder may have been made with the umask
    return folder


def check_upload_size(size: int, settings: Settings) -> None:
    if size > settings.media.max_upload_mb * MB:
        raise UploadTooLargeError(size, settings.media.max_upload_mb)


def _suffix(name: str) -> str:
    """The extension only (FFmpeg guesses some formats by it); never any part of the user's path."""
    suffix = Path(name).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ""


def _remove_stale(folder: Path) -> None:
    cutoff = time.time() - STALE_UPLOAD_SECONDS
    for old in folder.glob("upload-*"):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < cutoff:
                old.unlink()


@contextlib.contextmanager
def saved_upload(upload: BinaryIO, name: str, size: int, settings: Settings) -> Iterator[Path]:
    """Copy ``upload`` to a private temporary file, yield its path, delete it afterwards.

    Refuses an upload over the cap before writing anything, and stops writing if more
    bytes arrive than ``size`` said (UploadTooLargeError either way).
    """
    check_upload_size(size, settings)
    folder = upload_dir(settings)
    _remove_stale(folder)
    fd, tmp = tempfile.mkstemp(prefix="upload-", suffix=_suffix(name), dir=folder)  # mode 0600
    path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            with contextlib.suppress(AttributeError, OSError):
                upload.seek(0)
            copied = 0
            while chunk := upload.read(COPY_CHUNK):
                copied += len(chunk)
                check_upload_size(copied, settings)
                out.write(chunk)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def public_error(exc: BaseException) -> str:
    """What the page may say about a failed analysis: no paths, hosts or decoder internals."""
    if isinstance(exc, MediaError):
        return exc.public
    if isinstance(exc, UploadTooLargeError):
        return str(exc)
    return SERVER_PROBLEM
