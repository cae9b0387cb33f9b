"""MongoDB storage on plain pymongo.

``MONGODB_URI`` set: use it. Unset: start (or reuse) an embedded SecantusDB
wire-protocol server as a child process on a free loopback port, data under
``<data_dir>/db``. One code path either way: callers get a pymongo ``Database``.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymongo
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, PyMongoError

from pipeline.settings import Settings

log = logging.getLogger(__name__)

COLLECTIONS = ("sessions", "answers", "answer_scores", "frames", "profiles", "questions", "users")

# Every query the pages run has an index here (DESIGN.md: "Indexes on every query").
INDEXES: dict[str, list[IndexModel]] = {
    "sessions": [
        IndexModel([("started_at", DESCENDING)], name="by_started"),
        IndexModel([("candidate", ASCENDING), ("started_at", DESCENDING)], name="by_candidate"),
        IndexModel([("role", ASCENDING), ("started_at", DESCENDING)], name="by_role"),
        IndexModel([("coach", ASCENDING), ("started_at", DESCENDING)], name="by_coach"),
        IndexModel([("band", ASCENDING), ("started_at", DESCENDING)], name="by_band"),
        IndexModel([("candidate_user", ASCENDING), ("started_at", DESCENDING)], name="by_candidate_user"),
        # The Sessions page's sorts, each ending on _id so pages never overlap (pipeline.queries.session_sort).
        IndexModel([("started_at", DESCENDING), ("_id", ASCENDING)], name="list_by_date"),
        IndexModel([("grade", DESCENDING), ("started_at", DESCENDING), ("_id", ASCENDING)], name="list_by_grade"),
        IndexModel([("candidate", ASCENDING), ("started_at", DESCENDING), ("_id", ASCENDING)],
                   name="list_by_candidate"),
    ],
    "answers": [
        IndexModel([("session_id", ASCENDING), ("index", ASCENDING)], name="by_session"),
        IndexModel([("status", ASCENDING)], name="by_status"),
    ],
    "frames": [
        IndexModel([("session_id", ASCENDING), ("answer_id", ASCENDING), ("t", ASCENDING)], name="by_answer_time"),
    ],
    # Re-scored grades, one small document per answer (pipeline.queries.ANSWER_SCORES).
    "answer_scores": [IndexModel([("session_id", ASCENDING)], name="by_session")],
    "profiles": [
        IndexModel([("name", ASCENDING), ("version", DESCENDING)], name="by_name_version", unique=True),
    ],
    "questions": [IndexModel([("set_id", ASCENDING), ("order", ASCENDING)], name="by_set")],
    "users": [
        IndexModel([("username", ASCENDING)], name="by_username", unique=True),
        IndexModel([("role", ASCENDING)], name="by_role"),
        IndexModel([("coach", ASCENDING), ("role", ASCENDING)], name="by_coach"),
    ],
    # Read-only share links of one session (pipeline.export): token hash as _id; the server
    # removes expired ones (resolve_share also checks the time: TTL pruning is lazy).
    "shares": [
        IndexModel([("expires_at", ASCENDING)], name="expires", expireAfterSeconds=0),
        IndexModel([("session_id", ASCENDING)], name="by_session"),
    ],
    # Failed sign-ins per (client, username) and per client (pipeline.auth back-off), by hash
    # as _id; the server forgets them after expires_at (verify_password also checks the time).
    "login_failures": [IndexModel([("expires_at", ASCENDING)], name="expires", expireAfterSeconds=0)],
    # Sign-in tokens (by their SHA-256 as _id); expired ones are removed by the server.
    "logins": [
        IndexModel([("expires_at", ASCENDING)], name="expires", expireAfterSeconds=0),
        IndexModel([("username", ASCENDING)], name="by_username"),
    ],
}


class StorageError(ConnectionFailure):
    """The database could not be reached or started; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(uri: str, timeout_ms: int = 500) -> bool:
    client: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


@dataclass
class EmbeddedServer:
    """A SecantusDB server process owned by this process (or reused from another)."""

    storage_path: Path
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    @property
    def info_file(self) -> Path:
        return self.storage_path.parent / "db.server.json"

    def start(self, timeout: float = 30.0) -> EmbeddedServer:
        """Start the server, or reuse one another app process already runs on this data folder."""
        self.storage_path.mkdir(parents=True, exist_ok=True)
        # The lock serialises start-up between app processes sharing one data folder.
        with _file_lock(self.storage_path.parent / "db.start.lock"):
            reused = self._running_elsewhere()
            if reused:
                self.port = reused
                log.info("reusing embedded database on port %s", self.port)
                return self
            self.port = self.port or free_port()
            log_path = self.storage_path.parent / "db.log"
            with open(log_path, "ab") as log_file:
                self.process = subprocess.Popen(
                    [
                        sys.executable, "-m", "secantus",
                        "--host", "127.0.0.1", "--port", str(self.port),
                        "--storage-path", str(self.storage_path),
                        "--log-level", "WARNING",
                        # Without it a killed server loses writes it already acknowledged.
                        "--sync-on-commit",
                    ],
                    stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                )
            deadline = time.monotonic() + timeout
            while not ping(self.uri, 300):
                if self.process.poll() is not None:
                    raise StorageError(f"embedded database exited with {self.process.returncode}; see {log_path}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise StorageError(f"embedded database did not answer ping within {timeout:.0f}s; see {log_path}")
                time.sleep(0.1)
            self.info_file.write_text(json.dumps({"pid": self.process.pid, "port": self.port}))
            atexit.register(self.stop)
            return self

    def _running_elsewhere(self) -> int | None:
        try:
            info = json.loads(self.info_file.read_text())
        except (OSError, ValueError):
            return None
        if _pid_alive(int(info.get("pid", 0))) and ping(f"mongodb://127.0.0.1:{info['port']}/"):
            return int(info["port"])
        return None

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            if json.loads(self.info_file.read_text()).get("pid") == proc.pid:
                self.info_file.unlink()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_embedded: EmbeddedServer | None = None


def resolve_uri(settings: Settings) -> str:
    """The URI to use: ``MONGODB_URI`` if set, else the embedded server (started on demand)."""
    global _embedded
    if settings.mongodb_uri:
        return settings.mongodb_uri
    if _embedded is None or not ping(_embedded.uri):
        _embedded = EmbeddedServer(settings.data_dir / "db").start()
    return _embedded.uri


def client_for(uri: str, timeout_ms: int = 3000) -> pymongo.MongoClient:
    return pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, tz_aware=True, appname="mockai"
    )


def ensure_indexes(db: Database) -> None:
    for name, indexes in INDEXES.items():
        db[name].create_indexes(indexes)


def connect(settings: Settings) -> Database:
    """Connect, create indexes, return the database. Raises StorageError when unreachable."""
    try:
        uri = resolve_uri(settings)
        db = client_for(uri)[settings.db_name]
        db.command("ping")
        ensure_indexes(db)
        return db
    except PyMongoError as exc:
        raise StorageError(f"database unreachable: {exc}") from exc
