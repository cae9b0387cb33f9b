"""The embedded Redis (background-job broker): a redis-server child on an owner-only Unix socket under
data_dir/redis (no TCP), its AOF kept across restarts, reused by another app process on the same folder.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.embedded_db import _file_lock, _pid_alive, _terminate, secure_dir, secure_file, secure_tree

if TYPE_CHECKING:
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

SOCKET_NAME = "redis.sock"
# sockaddr_un.sun_path holds 108 bytes with its terminating NUL.
MAX_SOCKET_PATH = 107


class RedisStartError(RuntimeError):
    """The embedded Redis could not be found, started or reached; the message says why."""


def ping(socket_path: Path | str, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers PING on ``socket_path`` (a server still loading its AOF does not)."""
    client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=timeout,
                         socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))  # one try: a probe
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


@dataclass
class EmbeddedRedis:
    """A redis-server process owned by this process (or reused from another on the same folder)."""

    folder: Path
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        # The URLs name the socket by an absolute path, whatever the working folder of their user.
        self.folder = Path(os.path.abspath(self.folder))

    @property
    def socket_path(self) -> Path:
        return self.folder / SOCKET_NAME

    @property
    def broker_url(self) -> str:
        """kombu's form (Celery's broker_url)."""
        return f"redis+socket://{self.socket_path}"

    @property
    def client_url(self) -> str:
        """redis-py's form (``redis.Redis.from_url``)."""
        return f"unix://{self.socket_path}"

    @property
    def info_file(self) -> Path:
        return self.folder / "redis.server.json"

    @property
    def log_path(self) -> Path:
        return self.folder / "redis.log"

    def start(self, timeout: float = 20.0) -> EmbeddedRedis:
        """Start the server, or reuse the one another process runs on this folder.

        The socket path, and so both URLs, are the same on every start; queued messages survive a
        stop and a start (AOF, written on SIGTERM and every second).
        """
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisStartError(
                "redis-server was not found on PATH: install it (scripts/setup.sh does: apt-get install "
                "redis-server) or set MOCKAI_REDIS_URL to a Redis server the app can reach")
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH:
            raise RedisStartError(
                f"the embedded Redis socket path {self.socket_path} is longer than {MAX_SOCKET_PATH} bytes, "
                "which Unix sockets do not allow: set MOCKAI_DATA_DIR to a shorter folder")
        secure_dir(self.folder)
        with _file_lock(self.folder / "redis.start.lock"):
            if self._running_elsewhere():
                log.info("reusing embedded Redis on %s", self.socket_path)
                return self
            self._reap()
            if self.process is not None and ping(self.socket_path):
                return self  # ours, already up
            secure_tree(self.folder)  # AOF files of an older start, made under another umask
            self.process = self._launch(binary, timeout)
            self._write_info()
            atexit.register(self.stop)
            return self

    def _write_info(self) -> None:
        """Which process serves this folder, replaced whole (a reader never sees half a file)."""
        assert self.process is not None
        tmp = self.info_file.with_name(self.info_file.name + ".tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": self.process.pid, "socket": str(self.socket_path)}, fh)
        os.replace(tmp, self.info_file)

    def _launch(self, binary: str, timeout: float) -> subprocess.Popen[bytes]:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # left by a killed server; nothing answers on it
        log_fd = secure_file(self.log_path)  # created 0600 before redis-server opens it
        try:
            process = subprocess.Popen(
                [
                    binary,
                    "--port", "0",  # no TCP listener at all: only the owner-only socket
                    "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
                    "--dir", str(self.folder),
                    "--appendonly", "yes", "--appendfsync", "everysec",
                    "--save", "",
                    "--daemonize", "no",
                    "--logfile", str(self.log_path),
                    "--protected-mode", "yes",
                ],
                stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the app, which then stops us in order
                umask=0o077,  # AOF and log owner-only whatever our umask is
            )
        finally:
            os.close(log_fd)
        deadline = time.monotonic() + timeout
        while not ping(self.socket_path, 0.3):
            if process.poll() is not None:
                raise RedisStartError(
                    f"embedded Redis exited with {process.returncode}: {_last_line(self.log_path)} "
                    f"(see {self.log_path})")
            if time.monotonic() > deadline:
                _terminate(process)
                raise RedisStartError(
                    f"embedded Redis did not answer PING within {timeout:.0f}s; see {self.log_path}")
            time.sleep(0.05)
        return process

    def _reap(self) -> None:
        """Forget a server process of ours that died (SIGKILL): collect it so it is no zombie."""
        if self.process is not None and self.process.poll() is not None:
            log.warning("embedded Redis (pid %s) exited with %s", self.process.pid, self.process.returncode)
            self.process = None

    def _running_elsewhere(self) -> bool:
        """Whether another process's server (per the info file) runs on this folder and answers."""
        try:
            info = json.loads(self.info_file.read_text())
            pid = int(info.get("pid", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            return False
        if self.process is not None and self.process.pid == pid:
            return False  # our own child: alive or not, start() handles it
        return _pid_alive(pid) and ping(self.socket_path)

    def alive(self) -> bool:
        """Whether PING answers on the socket (ours or the reused server)."""
        if self.process is not None and self.process.poll() is not None:
            return False
        return ping(self.socket_path)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop our server (SIGTERM: Redis writes its AOF), SIGKILL after ``timeout``; a reused one is left up."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            _terminate(proc, timeout)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if json.loads(self.info_file.read_text()).get("pid") == proc.pid:
                self.info_file.unlink()


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1][-300:] if lines else "empty log"


_embedded: EmbeddedRedis | None = None
_embedded_lock = threading.Lock()


def embedded(settings: Settings) -> EmbeddedRedis:
    """This process's embedded Redis for ``settings`` (data_dir/redis): started, reused, or started again
    when it died (same socket, so the broker URL does not change)."""
    global _embedded
    folder = Path(os.path.abspath(settings.storage.data_dir / "redis"))
    with _embedded_lock:
        if _embedded is None or _embedded.folder != folder:
            _embedded = EmbeddedRedis(folder)
        if not _embedded.alive():
            _embedded.start()
        return _embedded


def broker_url(settings: Settings) -> str:
    """The Celery broker URL: ``settings.jobs.redis_url`` if set, else the embedded server's (started or reused)."""
    if settings.jobs.redis_url:
        return settings.jobs.redis_url
    return embedded(settings).broker_url


def client_url(broker: str) -> str:
    """Any broker URL in redis-py's form: ``redis+socket:///p`` -> ``unix:///p``; redis://, rediss://,
    unix:// as they are. The message of a bad URL names its scheme only (a URL may carry a password)."""
    parts = urlsplit(broker)
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        return broker
    if scheme in ("redis+socket", "socket"):
        if not parts.path:
            raise ValueError("a redis+socket:// URL needs the socket's absolute path (redis+socket:///path/redis.sock)")
        db = parse_qs(parts.query).get("virtual_host", [""])[0].lstrip("/")
        auth = parts.netloc if "@" in parts.netloc else ""  # ":password@" stays
        query = f"?db={db}" if db.isdigit() else ""
        return f"unix://{auth}{parts.path}{query}"
    raise ValueError(f"unsupported Redis URL scheme {scheme or '(none)'!r}: use redis://, rediss:// or "
                     "redis+socket:///path")
