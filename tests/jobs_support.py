"""Test harness for background jobs: a real embedded Redis, real `python -m sidecar worker` processes
(real models) on a temporary data folder, the shared SecantusDB, and recordings cut from ../shared/data."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo

from pipeline import jobs
from pipeline.embedded_redis import EmbeddedRedis
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
# Fast failure detection so a killed worker's job moves on within seconds (defaults are for production).
FAST = {"MOCKAI_JOB_HEARTBEAT_SECONDS": "0.5", "MOCKAI_JOB_STALE_SECONDS": "5", "MOCKAI_JOB_RESEND_SECONDS": "3",
        "MOCKAI_JOB_RETRY_BACKOFF_SECONDS": "0.5", "MOCKAI_FLUSH_SECONDS": "0.5"}


def cut(src: Path, out: Path, start: float, seconds: float, audio_only: bool = True) -> Path:
    """A clip of ``src`` (ffmpeg): distinct bytes per (start, seconds), so each is its own job."""
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-ss", f"{start:.2f}", "-t", f"{seconds:.2f}",
            "-i", str(src)]
    args += ["-vn", "-ac", "1", "-ar", "16000"] if audio_only else ["-vf", "scale=640:-2", "-c:v", "libx264",
                                                                   "-preset", "ultrafast", "-c:a", "aac"]
    subprocess.run([*args, str(out)], check=True, timeout=120)
    return out


def with_speech(video: Path, speech: Path, out: Path, seconds: float) -> Path:
    """A 640-wide video of a real face with real speech as its sound track."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(video),
                    "-i", str(speech), "-map", "0:v", "-map", "1:a", "-t", f"{seconds:.2f}", "-vf", "scale=640:-2",
                    "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(out)], check=True, timeout=120)
    return out


def audio_clips(shared: Path, folder: Path, n: int) -> list[Path]:
    """``n`` distinct speech clips of 4-11 s from jfk.flac and multilingual.mp3."""
    jfk, multi = shared / "speech" / "jfk.flac", shared / "speech" / "multilingual.mp3"
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append(cut(jfk, folder / f"clip{i:02d}.wav", start=0.1 * i, seconds=11.0 - 0.1 * i))
        else:
            out.append(cut(multi, folder / f"clip{i:02d}.wav", start=3.0 * i, seconds=6.0))
    return out


@dataclass
class JobCluster:
    """Redis + N workers on ``data_dir``, sharing the tests' database ``db_name``."""

    data_dir: Path
    mongo_uri: str
    db_name: str
    redis: EmbeddedRedis = field(init=False)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.redis = EmbeddedRedis(self.data_dir / "redis").start()

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **FAST, "MONGODB_URI": self.mongo_uri, "MOCKAI_DB_NAME": self.db_name,
                "MOCKAI_DATA_DIR": str(self.data_dir), "MOCKAI_REDIS_URL": self.redis.broker_url,
                "PYTHONPATH": str(ROOT)}

    def settings_env(self) -> dict[str, str]:
        """What a test sets in its own environment to submit like the app does."""
        return {k: v for k, v in self.env.items() if k.startswith("MOCKAI_") or k == "MONGODB_URI"}

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        log = (self.data_dir / f"worker-{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "sidecar", "worker", "--name", name], cwd=ROOT,
                                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.workers[name] = proc
        return proc

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker (the Celery process; its analysis processes leave when they see it gone)."""
        proc = self.workers.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def wait_ready(self, db: Any, names: list[str], timeout: float = 240.0) -> None:
        def ready() -> bool:
            states = {w["_id"]: w for w in jobs.list_workers(db, fresh_seconds=30)}
            for n in names:
                proc = self.workers.get(n)
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"worker {n} exited with {proc.returncode}: {self.log_tail(n)}")
            return all(states.get(n, {}).get("state") in ("ready", "busy") for n in names)
        wait_until(ready, f"workers {names} ready (models loaded)", timeout=timeout, every=0.5)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.data_dir / f"worker-{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        for name in list(self.workers):
            proc = self.workers.pop(name)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.redis.stop()


@contextlib.contextmanager
def job_cluster(data_dir: Path, mongo_uri: str, db_name: str) -> Iterator[JobCluster]:
    cluster = JobCluster(data_dir, mongo_uri, db_name)
    try:
        yield cluster
    finally:
        cluster.stop()


def database(mongo_uri: str, db_name: str) -> Any:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri, tz_aware=True,
                                                                      serverSelectionTimeoutMS=5000)
    return client[db_name]
