"""The Celery side of background jobs: the app (Redis broker, one queue), sending "run job X", and the
submit call pages and the CLI use. MongoDB holds the jobs (pipeline/jobs.py); a message only names one.

    celery -A sidecar.job_queue:app worker --pool solo -Q mockai     (what `python -m sidecar worker` runs)
"""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from typing import Any, BinaryIO

from celery import Celery
from celery.signals import worker_ready

from pipeline import jobs
from pipeline.job_inputs import store_input
from pipeline.settings import Settings

log = logging.getLogger(__name__)

QUEUE = "mockai"
TASK = "mockai.run_job"
# A message a worker took but never acknowledged (the worker died) goes back to the queue after this
# long; the reaper (sidecar/job_worker.py) notices a dead worker much sooner from the job's heartbeat.
VISIBILITY_TIMEOUT_S = 3600


def broker_url(settings: Settings) -> str:
    if settings.jobs.redis_url:
        return settings.jobs.redis_url
    from pipeline.embedded_redis import broker_url as embedded

    return embedded(settings)


def make_app(url: str) -> Celery:
    celery = Celery("mockai", broker=url, set_as_current=False)
    celery.conf.update(
        task_default_queue=QUEUE,
        task_acks_late=True,  # a job is acknowledged when it ended, never when it started
        task_reject_on_worker_lost=True,  # a pool child killed mid-job: the message goes back to the queue
        worker_prefetch_multiplier=1,  # a worker holds one job at a time, so a free worker gets the next
        task_ignore_result=True,  # results live in MongoDB
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_serializer="json", accept_content=["json"],
    )

    @celery.task(name=TASK, bind=True)  # type: ignore[untyped-decorator]
    def run_job(self: Any, job_id: str) -> str:
        from sidecar.job_worker import run_job as body

        return body(self.app, job_id)

    return celery


@lru_cache(maxsize=4)
def app_for(url: str) -> Celery:
    return make_app(url)


# For ``celery -A sidecar.job_queue:app worker`` (MOCKAI_REDIS_URL names the broker); the app and the
# CLI use app_for(broker_url(settings)).
app = make_app(os.environ.get("MOCKAI_REDIS_URL") or "redis://127.0.0.1:6379/0")


@worker_ready.connect  # type: ignore[untyped-decorator]
def _reaper_for_plain_celery(sender: Any = None, **_: Any) -> None:
    """A worker started by the celery command gets the same reaper as ``python -m sidecar worker``."""
    from sidecar.job_worker import on_worker_ready

    try:
        on_worker_ready(sender.app if sender is not None and hasattr(sender, "app") else app)
    except Exception:  # the worker still runs jobs; only lost messages wait for another worker's reaper
        log.exception("job reaper did not start")


def send(celery: Celery, db: Any, job_id: str, countdown: float | None = None) -> bool:
    """Put "run ``job_id``" on the broker; False (logged) when Redis is unreachable: the job stays waiting
    in MongoDB and a worker's reaper sends it once Redis is back."""
    try:
        # the task id is the job id: the reaper finds a job's message in Redis by it
        celery.send_task(TASK, args=[job_id], task_id=job_id, queue=QUEUE, countdown=countdown, retry=True,
                         retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5})
    except Exception as exc:  # kombu raises OperationalError and friends: any of them means "not sent"
        log.warning("job %s not sent to the broker (%s); it stays queued", job_id, type(exc).__name__)
        return False
    jobs.mark_sent(db, job_id)
    return True


def submit(celery: Celery, db: Any, spec: jobs.JobSpec, stream: BinaryIO | None, filename: str,
           settings: Settings, size: int | None = None) -> jobs.Submitted:
    """Check the user's queue room, keep the recording in MongoDB, record the job, send it.

    Raises QueueFullError and UploadTooLargeError (plain messages) before anything is kept."""
    jobs.check_queue_room(db, spec.owner, settings.jobs.max_queued_per_user)
    media = (store_input(db, stream, filename, settings.media.max_upload_mb, declared_size=size)
             if stream is not None else None)
    submitted = jobs.submit(db, spec, media, settings.jobs.max_attempts)
    if submitted.needs_sending:
        send(celery, db, submitted.job["_id"])
    return submitted


def queued_ids(client_url: str, queue: str = QUEUE) -> set[str] | None:
    """Ids of the jobs whose message sits in Redis (the queue, or taken and not yet acknowledged);
    None when Redis cannot be read."""
    import redis

    try:
        r = redis.Redis.from_url(client_url, socket_timeout=5)
        try:
            raw = [*r.lrange(queue, 0, -1), *r.hvals("unacked")]
        finally:
            r.close()
    except redis.RedisError:
        return None
    out: set[str] = set()
    for item in raw:
        try:
            message = json.loads(item)
            if isinstance(message, list):  # unacked: [message, exchange, routing key]
                message = message[0]
            if message["headers"].get("task") == TASK:
                out.add(str(message["headers"]["id"]))
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return out
