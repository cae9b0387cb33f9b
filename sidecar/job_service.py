"""What an app process starts beside itself for background jobs: the broker (the embedded Redis unless
MOCKAI_REDIS_URL is set) and settings.jobs.embedded_workers worker processes, restarted until stop().
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.embedded_db import _pid_alive, secure_dir, secure_file
from pipeline.embedded_redis import EmbeddedRedis
from pipeline.settings import Settings

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]  # the workers' working folder: `-m sidecar` resolves there
MIN_BACKOFF = 1.0  # seconds before the first restart of a worker that exited
MAX_BACKOFF = 30.0  # the longest wait; a worker that ran this long before exiting starts again at MIN_BACKOFF
POLL_SECONDS = 0.25  # how often the supervisor looks at its processes
REDIS_PING_SECONDS = 2.0  # how often it pings a reused (another process's) embedded Redis

WorkerCommand = Callable[[str], list[str]]


def default_worker_command(name: str) -> list[str]:
    return [sys.executable, "-m", "sidecar", "worker", "--name", name]


def next_backoff(previous: float | None, ran_seconds: float) -> float:
    """The wait before restarting a worker that exited after ``ran_seconds``: 1 s, doubling to 30 s;
    back to 1 s once it had run ``MAX_BACKOFF`` seconds (a crash a day is not a crash loop)."""
    if previous is None or ran_seconds >= MAX_BACKOFF:
        return MIN_BACKOFF
    return min(previous * 2, MAX_BACKOFF)


def file_safe(name: str) -> str:
    """``name`` usable as part of a file name (a node name may be host:port)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


@dataclass
class _Worker:
    name: str
    log_path: Path
    pid_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0  # monotonic
    backoff: float | None = None  # the last wait used; None before the first restart
    next_start: float = 0.0  # monotonic: when an exited worker is started again
    last_exit: int | None = None


class JobService:
    """The broker and the worker processes of one app process (``ui.session``), stopped at exit."""

    def __init__(self, settings: Settings, node: str, worker_command: WorkerCommand | None = None) -> None:
        self.settings = settings
        self.node = node
        self._command: WorkerCommand = worker_command or default_worker_command
        self._data_dir = Path(os.path.abspath(settings.storage.data_dir))
        self._workers: list[_Worker] = []
        self._env: dict[str, str] = {}
        self._broker: str | None = None
        self._redis: EmbeddedRedis | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def broker_url(self) -> str:
        """The Celery broker URL the workers were given (kombu form); only while started."""
        if self._broker is None:
            raise RuntimeError("the job service is not running: call start() first")
        return self._broker

    def start(self) -> JobService:
        """Start (or reuse) the broker and the workers; a second call does nothing."""
        with self._lock:
            if self._broker is not None:
                return self
            jobs = self.settings.jobs
            if jobs.redis_url:
                broker = jobs.redis_url
            else:
                self._redis = EmbeddedRedis(self._data_dir / "redis").start()
                broker = self._redis.broker_url
            self._workers = []  # a start after a stop begins afresh
            if jobs.embedded_workers:
                from pipeline.storage import resolve_uri

                # MONGODB_URI carries the embedded database's secret: it goes to the children only, never to a log.
                self._env = {**os.environ, "MOCKAI_REDIS_URL": broker, "MONGODB_URI": resolve_uri(self.settings),
                             "MOCKAI_DATA_DIR": str(self._data_dir)}
                logs = secure_dir(self._data_dir / "logs")
                for i in range(jobs.embedded_workers):
                    name = f"{self.node}-w{i}"
                    stem = f"worker-{file_safe(name)}"
                    worker = _Worker(name, logs / f"{stem}.log", logs / f"{stem}.pid")
                    self._reap_orphan(worker)
                    self._workers.append(worker)
                    self._spawn(worker)
            self._broker = broker
            self._stopping.clear()
            self._thread = threading.Thread(target=self._supervise, name="job-service", daemon=True)
            self._thread.start()
        atexit.register(self.stop)
        log.info("job service: %d worker(s) for node %s, broker %s", len(self._workers), self.node,
                 "embedded" if self._redis is not None else "MOCKAI_REDIS_URL")
        return self

    def workers(self) -> list[dict[str, Any]]:
        """Each worker process: name, pid, alive, restarts, last_exit (its last exit status), log (its file)."""
        with self._lock:
            return [
                {"name": w.name, "pid": w.process.pid if w.process is not None else None,
                 "alive": w.process is not None and w.process.poll() is None,
                 "restarts": w.restarts, "last_exit": w.last_exit, "log": str(w.log_path)}
                for w in self._workers
            ]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the workers (Celery's warm shutdown), SIGKILL what is left after ``timeout``; then the
        embedded Redis if this service started it. A second call does nothing; start() may follow."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            procs = [(w, w.process) for w in self._workers if w.process is not None]
            for _w, proc in procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for w, proc in procs:
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("job worker %s (pid %s) did not stop within %.0fs: killing it", w.name, proc.pid,
                                timeout)
                    proc.kill()
                    proc.wait()
                _kill_group(proc.pid)  # what it started (ffmpeg) goes with it
                w.last_exit = proc.returncode
                w.process = None
                with contextlib.suppress(FileNotFoundError):
                    w.pid_path.unlink()
            redis_server, self._redis = self._redis, None
            self._broker = None
        if redis_server is not None and redis_server.process is not None:
            redis_server.stop()

    # ------------------------------------------------------------------ internals

    def _spawn(self, worker: _Worker) -> None:
        """Start ``worker``'s process (lock held); a failure to start is retried like an exit."""
        argv = self._command(worker.name)
        log_fd = secure_file(worker.log_path)  # owner-only, appended across restarts
        try:
            worker.process = subprocess.Popen(
                argv, cwd=ROOT, env=self._env, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the app only; it stops the workers in order
            )
        except OSError as exc:
            log.error("could not start job worker %s: %s", worker.name, exc)
            worker.process = None
            self._schedule_restart(worker, ran_seconds=0.0)
            return
        finally:
            os.close(log_fd)
        worker.started_at = time.monotonic()
        fd = os.open(worker.pid_path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": worker.process.pid, "parent": os.getpid(), "argv": argv}, fh)

    def _schedule_restart(self, worker: _Worker, ran_seconds: float) -> None:
        worker.backoff = next_backoff(worker.backoff, ran_seconds)
        worker.next_start = time.monotonic() + worker.backoff

    def _supervise(self) -> None:
        last_ping = time.monotonic()
        while not self._stopping.wait(POLL_SECONDS):
            with self._lock:
                if self._stopping.is_set():
                    return
                now = time.monotonic()
                for w in self._workers:
                    proc = w.process
                    if proc is not None:
                        if proc.poll() is None:
                            continue
                        _kill_group(proc.pid)
                        w.last_exit, w.process = proc.returncode, None
                        self._schedule_restart(w, now - w.started_at)
                        log.warning("job worker %s (pid %s) exited with %s: starting it again in %.0fs (see %s)",
                                    w.name, proc.pid, proc.returncode, w.backoff, w.log_path)
                    elif now >= w.next_start:
                        w.restarts += 1
                        self._spawn(w)
                if self._redis is not None:
                    last_ping = self._watch_redis(now, last_ping)

    def _watch_redis(self, now: float, last_ping: float) -> float:
        """Start the embedded Redis again when it died (same socket: the URL the workers have stays right)."""
        assert self._redis is not None
        ours = self._redis.process
        if ours is not None and ours.poll() is None:
            return last_ping
        if ours is None and now - last_ping < REDIS_PING_SECONDS:
            return last_ping
        if ours is not None or not self._redis.alive():
            log.warning("embedded Redis is down: starting it again")
            try:
                self._redis.start()
            except Exception as exc:  # noqa: BLE001  # the next round tries again; the app keeps serving
                log.error("could not start the embedded Redis again: %s", exc)
        return now

    def _reap_orphan(self, worker: _Worker) -> None:
        """Stop the worker of this name that an app process, since dead (SIGKILL), left running."""
        try:
            info = json.loads(worker.pid_path.read_text())
            pid, parent, argv = int(info["pid"]), int(info["parent"]), [str(a) for a in info["argv"]]
        except (OSError, ValueError, KeyError, TypeError):
            return
        if _pid_alive(parent) or not _pid_alive(pid) or _cmdline(pid) != argv:
            return  # its app still runs (another app process on this folder), or it is gone / not ours
        log.warning("stopping job worker %s (pid %s) left by a previous app process", worker.name, pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15.0
        while _pid_alive(pid) and _cmdline(pid) == argv and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid) and _cmdline(pid) == argv:
            _kill_group(pid)
        with contextlib.suppress(FileNotFoundError):
            worker.pid_path.unlink()


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [os.fsdecode(part) for part in raw.split(b"\0")[:-1]]


def _kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (started with start_new_session): its leftovers."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
