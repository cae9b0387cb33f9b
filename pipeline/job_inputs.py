"""A job's recording, kept in MongoDB (GridFS bucket ``job_inputs``) so that a worker on any machine can
fetch it, and so that it outlives the page, the app node and the worker that first took the job.
Streamed in 1 MiB chunks both ways; the upload cap is checked while copying, before anything is kept."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import gridfs
from bson import ObjectId

from pipeline.embedded_db import secure_dir
from pipeline.uploads import COPY_CHUNK, MB, UploadTooLargeError, _suffix

BUCKET = "job_inputs"


@dataclass(frozen=True)
class InputFile:
    file_id: Any  # the GridFS file's id
    size: int
    sha256: str
    filename: str  # display only
    suffix: str  # the extension FFmpeg guesses formats by ("" when odd)

    def to_doc(self) -> dict[str, Any]:
        return {"file_id": self.file_id, "size": self.size, "sha256": self.sha256, "filename": self.filename,
                "suffix": self.suffix}


def _bucket(db: Any) -> gridfs.GridFSBucket:
    return gridfs.GridFSBucket(db, bucket_name=BUCKET, chunk_size_bytes=COPY_CHUNK)


def store_input(db: Any, stream: BinaryIO, filename: str, max_mb: int, declared_size: int | None = None) -> InputFile:
    """Copy ``stream`` into GridFS, hashing it on the way; UploadTooLargeError (nothing kept) past ``max_mb``."""
    limit = max_mb * MB
    if declared_size is not None and declared_size > limit:
        raise UploadTooLargeError(declared_size, max_mb)
    with contextlib.suppress(AttributeError, OSError):
        stream.seek(0)
    digest = hashlib.sha256()
    name = os.path.basename(filename)[:200]
    upload = _bucket(db).open_upload_stream(name, metadata={"suffix": _suffix(filename)})
    size = 0
    try:
        while chunk := stream.read(COPY_CHUNK):
            size += len(chunk)
            if size > limit:
                raise UploadTooLargeError(size, max_mb)
            digest.update(chunk)
            upload.write(chunk)
    except BaseException:
        upload.abort()
        raise
    upload.close()
    return InputFile(upload._id, size, digest.hexdigest(), name, _suffix(filename))


def store_path(db: Any, path: Path, max_mb: int) -> InputFile:
    with path.open("rb") as fh:
        return store_input(db, fh, path.name, max_mb, declared_size=path.stat().st_size)


def delete_input(db: Any, file_id: Any) -> None:
    with contextlib.suppress(gridfs.errors.NoFile):
        _bucket(db).delete(file_id if isinstance(file_id, ObjectId) else ObjectId(str(file_id)))


def exists(db: Any, file_id: Any) -> bool:
    return db[f"{BUCKET}.files"].find_one({"_id": file_id}, {"_id": 1}) is not None


@contextlib.contextmanager
def fetched(db: Any, input_doc: dict[str, Any], data_dir: Path) -> Iterator[Path]:
    """The job's recording as a private temporary file (0600 under data_dir/uploads), removed afterwards."""
    folder = secure_dir(data_dir / "uploads")
    fd, tmp = tempfile.mkstemp(prefix="upload-job-", suffix=str(input_doc.get("suffix") or ""), dir=folder)
    path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            _bucket(db).download_to_stream(input_doc["file_id"], out)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
