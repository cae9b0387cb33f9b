"""``python -m sidecar worker``: one Celery worker process (solo pool: one job at a time, models loaded
once) plus its reaper, which sends again what the broker lost: a running job whose worker went silent
(killed, machine gone) and a waiting job whose message is in neither the queue nor a worker (Redis
restarted without it). Any number of these run on any machines that reach MongoDB and Redis.

    MOCKAI_REDIS_URL=redis://queue:6379/0 MONGODB_URI=mongodb://db/ python -m sidecar worker --name gpu-1
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import socket
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from pipeline import jobs
from pipeline.settings import Settings

log = logging.getLogger(__name__)

_runner: Any = None  # this process's JobRunner, made by main() (or on first use under `celery -A`)
_runner_lock = threading.Lock()


def worker_settings(settings: Settings, name: str) -> Settings:
    """The worker's settings: the shared database resolved once (the embedded one is reused, never a
    second one started), and a data folder of its own for its journals and temporary copies."""
    from pipeline.storage import resolve_uri
    from sidecar.job_queue import broker_url

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80] or "worker"
    return settings.with_values({
        "mongodb_uri": resolve_uri(settings), "redis_url": broker_url(settings),
        "data_dir": str(settings.storage.data_dir / "workers" / safe),
    })


def runner() -> Any:
    global _runner
    with _runner_lock:
        if _runner is None:
            from sidecar.job_runner import JobRunner

            name = os.environ.get("MOCKAI_WORKER_NAME") or default_name()
            _runner = JobRunner(worker_settings(Settings(), name), name)
        return _runner


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def run_job(celery: Any, job_id: str) -> str:
    """The task body: run the job; a failed try with attempts left is sent again after its back-off."""
    from sidecar.job_queue import send

    r = runner()
    status, retry_in = r.run(job_id)
    if status == jobs.RETRYING and retry_in is not None:
        send(celery, r.store.get_db(), job_id, countdown=retry_in)
    return str(status)


class Reaper:
    """Every ``every`` seconds: stale running jobs back to waiting and sent again; waiting jobs whose
    message is gone sent again. Runs in every worker; the atomic updates make two reapers harmless."""

    def __init__(self, celery: Any, settings: Settings, client_url: str) -> None:
        self.celery, self.settings, self.client_url = celery, settings, client_url
        self.every = max(0.5, min(settings.jobs.stale_seconds / 4, settings.jobs.resend_seconds / 2))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-reaper", daemon=True)

    def start(self) -> Reaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        from pipeline.store import Store

        store = Store(self.settings, writer_name="jobs-reaper")
        try:
            while not self._stop.wait(self.every):
                try:
                    db = store.get_db()
                    if _runner is not None:
                        _runner.seen(db)
                    self.once(db)
                except Exception as exc:  # database or Redis down: the next round tries again
                    log.warning("job reaper: %s", exc)
        finally:
            store.close()

    def once(self, db: Any) -> list[str]:
        """One round; returns the ids it sent again."""
        from sidecar.job_queue import queued_ids, send

        sent: list[str] = []
        for job_id in jobs.stale_running(db, self.settings.jobs.stale_seconds):
            if jobs.requeue_stale(db, job_id, self.settings.jobs.stale_seconds):
                log.warning("job %s: its worker went silent; queued again", job_id)
                if send(self.celery, db, job_id):
                    sent.append(job_id)
        waiting = jobs.unsent_waiting(db, self.settings.jobs.resend_seconds)
        if waiting:
            present = queued_ids(self.client_url)
            if present is None:
                return sent  # Redis unreadable: cannot tell what it lost
            for job_id in waiting:
                if job_id in present:
                    jobs.mark_sent(db, job_id)  # still queued: look again later
                    continue
                job = jobs.get(db, job_id) or {}
                countdown = None
                if job.get("status") == jobs.RETRYING and job.get("retry_at"):
                    retry_at = job["retry_at"] if job["retry_at"].tzinfo else job["retry_at"].replace(tzinfo=UTC)
                    countdown = max(0.0, (retry_at - datetime.now(UTC)).total_seconds())
                log.warning("job %s: its message was lost; sent again", job_id)
                if send(self.celery, db, job_id, countdown=countdown):
                    sent.append(job_id)
        return sent


_reaper: Reaper | None = None


def ensure_reaper(celery: Any, settings: Settings) -> Reaper:
    """This process's one reaper (``python -m sidecar worker`` starts it; so does a plain
    ``celery -A sidecar.job_queue:app worker``, when the worker is ready)."""
    global _reaper
    from pipeline.embedded_redis import client_url

    with _runner_lock:
        if _reaper is None:
            assert settings.jobs.redis_url is not None
            _reaper = Reaper(celery, settings, client_url(settings.jobs.redis_url)).start()
        return _reaper


def on_worker_ready(celery: Any) -> None:
    r = runner()
    ensure_reaper(celery, r.settings)
    if r.state == "warming":  # a plain celery worker: load the models now, not at the first job
        threading.Thread(target=r.warm, name="job-warm-up", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar worker",
                                     description="MockAI background-job worker (Celery, Redis broker)")
    parser.add_argument("--name", default=None, help="this worker's name in the job records (default host-pid)")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.loglevel.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pydantic import ValidationError

    from pipeline.settings import settings_error_text
    from sidecar.job_queue import QUEUE, app_for

    name = args.name or default_name()
    os.environ["MOCKAI_WORKER_NAME"] = name
    try:
        base = Settings()
    except ValidationError as exc:
        print(f"error: {settings_error_text(exc)}", file=sys.stderr)
        return 2
    with contextlib.suppress(OSError):  # live interviews on this machine come first
        os.nice(base.jobs.worker_nice)
    settings = worker_settings(base, name)
    global _runner
    from sidecar.job_runner import JobRunner

    # Stopped while loading its models (before Celery takes over the signals): leave through the finally
    # below, so the worker list says "stopped" instead of "warming" until it goes stale.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    _runner = JobRunner(settings, name)
    assert settings.jobs.redis_url is not None
    celery = app_for(settings.jobs.redis_url)
    reaper: Reaper | None = None
    try:
        _runner.warm()  # models loaded before the first job is taken: a job's time is its analysis
        reaper = ensure_reaper(celery, settings)
        with contextlib.suppress(Exception):
            reaper.once(_runner.store.get_db())  # jobs a dead worker left behind, before taking new ones
        celery.worker_main(["worker", "--pool=solo", "--concurrency=1", f"--hostname={name}@%h", "-Q", QUEUE,
                            "--without-gossip", "--without-mingle", "--without-heartbeat",
                            f"--loglevel={args.loglevel.upper()}"])
    finally:
        if reaper is not None:
            reaper.stop()
        _runner.close()  # says "stopped" in the worker list
    return 0
