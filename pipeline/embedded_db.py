"""The embedded SecantusDB server (a child process, reused across app processes on one data folder)
and the owner-only files it needs: 0700 folders, 0600 files, a generated SCRAM secret.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

log = logging.getLogger(__name__)

# A MongoClient whose documents are plain dicts (the app's only kind).
Client = pymongo.MongoClient[dict[str, Any]]


class StorageError(ConnectionFailure):
    """The database could not be reached or started; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_free(port: int) -> bool:
    """Whether ``port`` can be listened on again (as the server binds it: SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def ping(uri: str, timeout_ms: int = 500) -> bool:
    client: Client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


# Owner-only modes, set explicitly so the umask of whoever starts the app does not matter.
DIR_MODE = 0o700
FILE_MODE = 0o600
DB_USER = "mockai"
AUTH_FAILED = 18  # mongod's AuthenticationFailed
USER_EXISTS = 51003


def secure_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it owner-only (fixes a folder made by an older version)."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def secure_file(path: Path) -> int:
    """Open ``path`` for appending, created owner-only; an existing file is made owner-only too."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def secure_tree(root: Path) -> None:
    """Owner-only modes on everything under ``root`` (WiredTiger files from older starts)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, DIR_MODE)
        for name in filenames:
            with contextlib.suppress(FileNotFoundError):
                p = os.path.join(dirpath, name)
                if not os.path.islink(p):
                    os.chmod(p, FILE_MODE)


def _read_secret(path: Path) -> str | None:
    try:
        os.chmod(path, FILE_MODE)
        value = json.loads(path.read_text()).get("password")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def _write_secret(path: Path) -> str:
    """A new random secret in ``path`` (0600), replacing an unreadable one."""
    password = secrets.token_urlsafe(32)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    with os.fdopen(fd, "w") as fh:
        json.dump({"user": DB_USER, "password": password}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return password


@dataclass
class EmbeddedServer:
    """A SecantusDB server process owned by this process (or reused from another)."""

    storage_path: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    auth: bool = True
    # Never in repr: the secret must not reach logs or test output.
    _password: str | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.storage_path.parent

    @property
    def secret_file(self) -> Path:
        return self.data_dir / "db.secret"

    @property
    def uri(self) -> str:
        """The URI with credentials (keep it out of logs: see ``safe_uri``)."""
        if not self.auth:
            return self.safe_uri
        return f"mongodb://{DB_USER}:{self.password}@127.0.0.1:{self.port}/?authSource=admin"

    @property
    def safe_uri(self) -> str:
        """The URI without credentials: for logs and messages."""
        return f"mongodb://127.0.0.1:{self.port}/"

    @property
    def password(self) -> str:
        """The generated secret of this data folder, created (0600) on first use."""
        if self._password is None:
            secure_dir(self.data_dir)
            with _file_lock(self.data_dir / "db.start.lock"):
                self._password = _read_secret(self.secret_file) or _write_secret(self.secret_file)
        return self._password

    @property
    def info_file(self) -> Path:
        return self.data_dir / "db.server.json"

    def start(self, timeout: float = 30.0) -> EmbeddedServer:
        """Start the server, or reuse one another app process already runs on this data folder.

        ``port`` set: that port if it is free (a restart keeps the URI), else a new one.
        """
        secure_dir(self.data_dir)
        secure_dir(self.storage_path)
        # The lock serialises start-up between app processes sharing one data folder.
        with _file_lock(self.data_dir / "db.start.lock"):
            fresh_secret = False
            if self.auth and self._password is None:
                self._password = _read_secret(self.secret_file)
                if self._password is None:
                    self._password = _write_secret(self.secret_file)
                    fresh_secret = True
            reused = self._running_elsewhere()
            if reused:
                self.port = reused
                log.info("reusing embedded database on port %s", self.port)
                return self
            self._reap()
            secure_tree(self.storage_path)
            if self.auth and fresh_secret:
                self._provision(timeout)  # a new secret: its user has to be created first
            if not self.port or not port_free(self.port):
                self.port = free_port()
            self.process = self._launch(self.port, self.auth, timeout)
            if self.auth and not self._credentials_work():
                # The data folder's user predates this secret (secret file lost): set it again.
                self.stop()
                self._provision(timeout)
                self.process = self._launch(self.port, self.auth, timeout)
            secure_tree(self.storage_path)
            fd = os.open(self.info_file, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, FILE_MODE)
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "w") as fh:
                json.dump({"pid": self.process.pid, "port": self.port}, fh)
            atexit.register(self.stop)
            return self

    def _launch(self, port: int, auth: bool, timeout: float) -> subprocess.Popen[bytes]:
        log_path = self.data_dir / "db.log"
        log_fd = secure_file(log_path)
        try:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "secantus",
                    "--host", "127.0.0.1", "--port", str(port),
                    "--storage-path", str(self.storage_path),
                    "--log-level", "WARNING",
                    # Without it a killed server loses writes it already acknowledged.
                    "--sync-on-commit",
                    *(["--auth"] if auth else []),
                ],
                stdout=log_fd, stderr=subprocess.STDOUT, start_new_session=True,
                umask=0o077,  # WiredTiger's files owner-only whatever our umask is
            )
        finally:
            os.close(log_fd)
        anon = f"mongodb://127.0.0.1:{port}/"  # ping needs no credentials
        deadline = time.monotonic() + timeout
        while not ping(anon, 300):
            if process.poll() is not None:
                raise StorageError(f"embedded database exited with {process.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                _terminate(process)
                raise StorageError(f"embedded database did not answer ping within {timeout:.0f}s; see {log_path}")
            time.sleep(0.1)
        return process

    def _provision(self, timeout: float) -> None:
        """Create (or reset) the app's user: the server runs once without auth, on a private port."""
        process = self._launch(free_port(), auth=False, timeout=timeout)
        try:
            port = _port_of(process)
            client: Client = pymongo.MongoClient(
                f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=5000
            )
            try:
                roles = [{"role": "root", "db": "admin"}]
                try:
                    client.admin.command("createUser", DB_USER, pwd=self.password, roles=roles)
                except OperationFailure as exc:
                    if exc.code != USER_EXISTS:
                        raise
                    client.admin.command("updateUser", DB_USER, pwd=self.password, roles=roles)
            finally:
                client.close()
            log.info("embedded database user provisioned")
        except PyMongoError as exc:
            raise StorageError(f"could not create the embedded database user: {exc}") from exc
        finally:
            _terminate(process)

    def _credentials_work(self) -> bool:
        client: Client = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=5000)
        try:
            client.admin.command("listDatabases", nameOnly=True)
            return True
        except OperationFailure as exc:
            if exc.code in (AUTH_FAILED, 13):
                return False
            raise
        finally:
            client.close()

    def _reap(self) -> None:
        """Forget a server process of ours that died (SIGKILL): collect it so it is no zombie."""
        if self.process is not None and self.process.poll() is not None:
            log.warning("embedded database (pid %s) exited with %s", self.process.pid, self.process.returncode)
            self.process = None

    def _running_elsewhere(self) -> int | None:
        try:
            info = json.loads(self.info_file.read_text())
            pid, port = int(info.get("pid", 0)), int(info["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if self.process is not None and self.process.pid == pid and self.process.poll() is not None:
            return None  # our own child, dead (a zombie still answers kill(pid, 0))
        if _pid_alive(pid) and ping(self._uri_for(port)):
            return port
        return None

    def _uri_for(self, port: int) -> str:
        if not self.auth:
            return f"mongodb://127.0.0.1:{port}/"
        return f"mongodb://{DB_USER}:{self.password}@127.0.0.1:{port}/?authSource=admin"

    def alive(self, timeout_ms: int = 500) -> bool:
        """Whether the server answers (with our credentials)."""
        if self.process is not None and self.process.poll() is not None:
            return False
        return bool(self.port) and ping(self.uri, timeout_ms)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        _terminate(proc, timeout)
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.info_file.read_text()).get("pid") == proc.pid:
                self.info_file.unlink()


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("embedded server (pid %s) did not stop within %.0fs: killing it", proc.pid, timeout)
        proc.kill()
        proc.wait()


def _port_of(process: subprocess.Popen[bytes]) -> int:
    args = [str(a) for a in process.args]  # type: ignore[union-attr]  # always launched with an argv list
    return int(args[args.index("--port") + 1])


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
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd = secure_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
