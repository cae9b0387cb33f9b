"""Background jobs in the pages: the job service started once per server (embedded Redis + workers, or
only the broker connection when MOCKAI_REDIS_URL names one), and one widget for a job's progress."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import streamlit as st

from pipeline import jobs
from pipeline.safe_text import md
from pipeline.settings import get_settings

log = logging.getLogger(__name__)

QUEUE_UNAVAILABLE = ("The background-job queue could not be started on this server, so recordings cannot be "
                     "analysed right now; nothing was stored. The server log says why.")


@dataclass
class JobClient:
    """What pages need of the queue: submit, send again, and the workers this app started."""

    celery: Any
    service: Any  # sidecar.job_service.JobService

    def submit(self, db: Any, spec: jobs.JobSpec, stream: Any, filename: str, size: int | None) -> jobs.Submitted:
        from sidecar.job_queue import submit

        return submit(self.celery, db, spec, stream, filename, get_settings(), size=size)

    def send(self, db: Any, job_id: str) -> bool:
        from sidecar.job_queue import send

        return send(self.celery, db, job_id)

    def workers(self) -> list[dict[str, Any]]:
        return list(self.service.workers())


@st.cache_resource(show_spinner="Starting the background-job queue…")
def job_client() -> JobClient | None:
    """The server's queue connection (None, logged, when it cannot start: pages say QUEUE_UNAVAILABLE)."""
    from pipeline.capacity import node_id
    from sidecar.job_queue import app_for
    from sidecar.job_service import JobService

    settings = get_settings()
    node = node_id(settings.capacity, int(st.get_option("server.port") or 8501))
    try:
        service = JobService(settings, node).start()
    except Exception:
        log.exception("background-job queue did not start")
        return None
    return JobClient(app_for(service.broker_url), service)


def stage_text(job: dict[str, Any]) -> str:
    return jobs.STAGES.get(str(job.get("stage") or job.get("status")), str(job.get("stage") or ""))


def show_job_progress(job: dict[str, Any]) -> None:
    """A job's stage, progress bar and (when it failed) its reason, all escaped."""
    status = job.get("status")
    name = md(job.get("spec", {}).get("filename") or "the recording")
    if status == jobs.FAILED:
        st.error(f"Analysis of {name} failed: {md(job.get('error') or 'no reason was recorded')}",
                 icon=":material/error:")
        return
    if status == jobs.CANCELLED:
        st.warning(f"Analysis of {name} was cancelled.", icon=":material/cancel:")
        return
    tries = f" (try {job.get('attempts')} of {job.get('max_attempts')})" if (job.get("attempts") or 0) > 1 else ""
    label = f"{stage_text(job)}{tries}"
    if status == jobs.RETRYING and job.get("error"):
        label += f": the last try failed ({md(job['error'])})"
    st.progress(float(job.get("progress") or 0.0), text=label)
