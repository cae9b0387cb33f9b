"""One background job, start to end, inside a worker: claim it in MongoDB, fetch its recording, analyse
it with a warm sidecar (the same engine as a live answer), wait until its answer is stored, mark it done.
A heartbeat thread writes progress and notices a cancel; a failure is retried with back-off or ends as
failed with a plain reason. A retry first removes what an interrupted try had stored of the answer."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from pipeline import jobs
from pipeline.answer_audio import UNFINISHED, keep_recording
from pipeline.job_inputs import delete_input, fetched
from pipeline.media import MediaError, load_audio, probe
from pipeline.settings import Settings
from pipeline.store import Store
from pipeline.uploads import SERVER_PROBLEM, UploadTooLargeError, public_error

log = logging.getLogger(__name__)

STORED_WAIT_S = 60.0  # the speech worker's writer flushes every flush_seconds; this is far past that


class JobStoppedError(Exception):
    """Raised inside the analysis when the job was cancelled or taken from this worker."""

    def __init__(self, cancelled: bool) -> None:
        super().__init__("cancelled" if cancelled else "taken over")
        self.cancelled = cancelled


class _Heartbeat:
    """Writes the job's stage/progress every ``every`` seconds; the analysis reads ``stop_reason``."""

    def __init__(self, db: Any, job_id: str, worker: str, every: float) -> None:
        self.db, self.job_id, self.worker, self.every = db, job_id, worker, every
        self.stage, self.progress = "starting", 0.0
        self.stop_reason: JobStoppedError | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"job-heartbeat-{job_id[:8]}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def set(self, stage: str, progress: float) -> None:
        self.stage, self.progress = stage, progress
        if self.stop_reason is not None:
            raise self.stop_reason

    def _run(self) -> None:
        while not self._done.wait(self.every):
            try:
                beat = jobs.beat(self.db, self.job_id, self.worker, self.stage, self.progress)
            except Exception as exc:  # database blip: the next beat tries again; stale_seconds is the margin
                log.warning("job %s: heartbeat not written (%s)", self.job_id, type(exc).__name__)
                continue
            if not beat.ours or beat.cancel:
                self.stop_reason = JobStoppedError(cancelled=beat.cancel)


class JobRunner:
    """Runs jobs one at a time in this worker process, keeping its sidecar (models) warm between jobs."""

    def __init__(self, settings: Settings, worker: str) -> None:
        self.settings, self.worker = settings, worker
        self.store = Store(settings, writer_name="jobs")
        self._sidecar: Any = None
        self._sidecar_lock = threading.Lock()
        self.state, self.job_id = "warming", cast(str | None, None)
        self.done = 0

    def seen(self, db: Any) -> None:
        """This worker's entry in the worker list (the reaper calls it every round)."""
        import os
        import socket

        jobs.worker_seen(db, self.worker, self.state, self.job_id, host=socket.gethostname(), pid=os.getpid(),
                         jobs_done=self.done)

    def warm(self) -> None:
        """Load the models now (the worker says "warming" meanwhile, then "ready")."""
        with contextlib.suppress(Exception):
            self.seen(self.store.get_db())
        self.sidecar()
        self.state = "ready"
        with contextlib.suppress(Exception):
            self.seen(self.store.get_db())

    def sidecar(self) -> Any:
        with self._sidecar_lock:  # the warm-up thread and the first job may both ask
            return self._sidecar_locked()

    def _sidecar_locked(self) -> Any:
        from sidecar.supervisor import Sidecar

        if self._sidecar is not None and not self._sidecar.wait_ready():  # a worker died and did not come back
            self._sidecar.stop()
            self._sidecar = None
        if self._sidecar is None:
            one = self.settings.model_copy(update={"sidecar": self.settings.sidecar.model_copy(
                update={"speech_workers": 1})})
            sidecar = Sidecar(one, store=True).start()
            if not sidecar.wait_ready():
                status = sidecar.status()
                sidecar.stop()
                raise RuntimeError(f"analysis engine failed to start: {status['workers']}")
            self._sidecar = sidecar
        return self._sidecar

    def _drop_sidecar(self) -> None:
        with self._sidecar_lock:
            if self._sidecar is not None:
                with contextlib.suppress(Exception):
                    self._sidecar.stop()
                self._sidecar = None

    def close(self) -> None:
        self.state = "stopped"
        with contextlib.suppress(Exception):
            self.seen(self.store.get_db())
        if self._sidecar is not None:
            self._sidecar.stop()
            self._sidecar = None
        self.store.close()

    def run(self, job_id: str) -> tuple[str, float | None]:
        """Run ``job_id``; returns its new status and, when it is to be tried again, after how many seconds."""
        db = self.store.get_db()
        job = jobs.claim(db, job_id, self.worker, self.settings.jobs.stale_seconds)
        if job is None:
            return "skipped", None
        log.info("job %s: attempt %d on %s", job_id, job["attempts"], self.worker)
        self.state, self.job_id = "busy", job_id
        with contextlib.suppress(Exception):
            self.seen(db)
        try:
            return self._run_claimed(db, job_id, job)
        finally:
            self.state, self.job_id = "ready", None
            self.done += 1
            with contextlib.suppress(Exception):
                self.seen(db)

    def _run_claimed(self, db: Any, job_id: str, job: dict[str, Any]) -> tuple[str, float | None]:
        try:
            with _Heartbeat(db, job_id, self.worker, self.settings.jobs.heartbeat_seconds) as hb:
                spec = jobs.JobSpec.from_doc(job["spec"])
                result = self._reanalyse(db, job, spec, hb) if spec.kind == "reanalyse" else \
                    self._analyse(db, job, spec, hb)
                if hb.stop_reason is not None:
                    raise hb.stop_reason
                hb.set("storing", 0.98)
            if not jobs.finish(db, job_id, self.worker, result):
                return "skipped", None
            if job.get("input"):
                delete_input(db, job["input"]["file_id"])
            return jobs.DONE, None
        except JobStoppedError as stop:
            if stop.cancelled:
                self._discard(db, job)
                jobs.cancelled_while_running(db, job_id, self.worker)
                return jobs.CANCELLED, None
            return "skipped", None  # another worker has it now
        except (MediaError, UploadTooLargeError) as exc:  # the recording itself: trying again cannot help
            self._discard(db, job)
            return jobs.attempt_failed(db, job_id, self.worker, public_error(exc), retry_in=None), None
        except Exception as exc:
            log.exception("job %s failed on %s", job_id, self.worker)
            self._drop_sidecar()  # it may still be busy with this try's answer: the next try gets a fresh one
            backoff = self.settings.jobs.retry_backoff_seconds * 2 ** max(0, job["attempts"] - 1)
            status = jobs.attempt_failed(db, job_id, self.worker, _reason(exc), retry_in=backoff)
            return status, (backoff if status == jobs.RETRYING else None)

    # ------------------------------------------------------------------------------------ kinds

    def _analyse(self, db: Any, job: dict[str, Any], spec: jobs.JobSpec, hb: _Heartbeat) -> dict[str, Any]:
        from sidecar.analyze import AnalyzeRequest, analyze

        session_id, answer_id = job["session_id"], job["answer_id"]
        if not job.get("input"):
            raise MediaError("job without a recording", public="This job has no recording to analyse.")
        hb.set("fetching", 0.02)
        self._discard(db, job)  # what an interrupted earlier try stored of this answer
        own_session = spec.session_id is None
        if own_session:
            self._ensure_session(db, session_id, spec)
        with fetched(db, job["input"], self.settings.storage.data_dir) as path:
            info = probe(path)
            # the frames analyze samples: every frame_sample_every-th of the video's
            expected = max(1.0, (info.video_frames or (info.duration or 0.0) * (info.fps or 30.0))
                           / self.settings.capture.frame_sample_every)

            def progress(kind: str, n: int) -> None:
                if kind == "video":
                    hb.set("video", 0.05 + 0.65 * min(1.0, n / expected))
                else:
                    hb.set("speech", 0.75)

            is_audio = spec.media_kind == "audio"
            request = AnalyzeRequest(spec.question, spec.reference, tuple(spec.key_points),
                                     video=None if is_audio else path, audio=path if is_audio else None,
                                     candidate=spec.candidate, role=spec.role)
            sidecar = self.sidecar()
            report = analyze(request, self.settings, store=True, sidecar=sidecar, progress=progress,
                             session_id=session_id, index=spec.index, answer_id=answer_id)
            hb.set("storing", 0.9)
            if not is_audio:
                sidecar.flush_frames(session_id, answer_id)
            answer = self._wait_stored(db, answer_id, hb)
            if not own_session and _consented_to_keep_audio(db, session_id):
                self._keep_audio(db, answer, path)
        grade = report.get("grade") or {}
        if own_session:
            db.sessions.update_one({"_id": session_id}, {"$set": {
                "status": "complete", "ended_at": datetime.now(UTC), "grade": grade.get("score"),
                "band": grade.get("band"), "flags": list(grade.get("flags") or [])}})
        return _result(answer, report, session_id)

    def _reanalyse(self, db: Any, job: dict[str, Any], spec: jobs.JobSpec, hb: _Heartbeat) -> dict[str, Any]:
        from sidecar.reanalyse import reanalyse

        hb.set("fetching", 0.05)
        report = reanalyse(db, self.settings, job["answer_id"], self.sidecar(), progress=hb.set)
        hb.set("storing", 0.9)
        answer = db.answers.find_one({"_id": job["answer_id"]}, {"words": 0})  # written by reanalyse itself
        if answer is None:
            raise MediaError("answer deleted during re-analysis", public="This answer no longer exists.")
        return _result(answer, report, job["session_id"])

    # ------------------------------------------------------------------------------------ storage

    def _ensure_session(self, db: Any, session_id: str, spec: jobs.JobSpec) -> None:
        from pipeline.interview import new_session_doc

        # the coach who submitted the batch sees its sessions (pipeline.auth.session_access_filter)
        coach = None if spec.owner == "cli" or spec.owner.startswith("candidate:") else spec.owner
        doc = new_session_doc(spec.candidate, spec.role, spec.question_set, self.settings, source="batch",
                              coach=coach)
        doc["_id"] = session_id
        doc["questions"] = [{"question": spec.question, "reference": spec.reference,
                             "key_points": list(spec.key_points)}]
        doc["owner"] = spec.owner
        db.sessions.update_one({"_id": session_id}, {"$setOnInsert": doc}, upsert=True)

    def _keep_audio(self, db: Any, answer: dict[str, Any], path: Path) -> None:
        """The candidate consented to keeping their raw audio: keep this upload's as a live answer's is
        kept, so it can be re-analysed with later models (the recording itself is dropped with the job)."""
        if not probe(path).has_audio:
            return
        audio = load_audio(path, max_seconds=self.settings.media.max_answer_seconds)
        keep_recording(lambda coll, doc: db[coll].replace_one({"_id": doc["_id"]}, doc, upsert=True),
                       self.worker, answer, audio)

    def _discard(self, db: Any, job: dict[str, Any]) -> None:
        """Remove this job's answer and frames as an earlier, interrupted try stored them (analyse only:
        a re-analysis updates an answer that is not the job's to delete)."""
        if job.get("kind") != "analyse":
            return
        db.frames.delete_many({"answer_id": job["answer_id"]})
        db.answers.delete_one({"_id": job["answer_id"]})

    def _wait_stored(self, db: Any, answer_id: str, hb: _Heartbeat) -> dict[str, Any]:
        """The answer as stored, once the speech worker's writer has written its finished state."""
        query: dict[str, Any] = {"_id": answer_id, "status": {"$nin": list(UNFINISHED)}}
        deadline = time.monotonic() + max(STORED_WAIT_S, 3 * self.settings.storage.flush_seconds)
        while True:
            found: dict[str, Any] | None = db.answers.find_one(query, {"words": 0})
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise RuntimeError(f"answer {answer_id} was not stored within {STORED_WAIT_S:.0f}s")
            hb.set("storing", 0.95)
            time.sleep(0.2)  # waiting on another process's writer: nothing to wait on but the database


def _consented_to_keep_audio(db: Any, session_id: str) -> bool:
    session = db.sessions.find_one({"_id": session_id}, {"consent": 1}) or {}
    return bool((session.get("consent") or {}).get("keep_audio"))


def _result(answer: dict[str, Any], report: dict[str, Any], session_id: str) -> dict[str, Any]:
    grade = answer.get("grade") or report.get("grade") or {}
    transcript = str(answer.get("transcript") or report.get("transcript") or "")
    return {"answer_id": answer["_id"], "session_id": session_id, "grade": grade.get("score"),
            "band": grade.get("band"), "status": answer.get("status"), "transcript": transcript[:300],
            "analysis_s": (report.get("timings") or {}).get("total_s")}


def _reason(exc: BaseException) -> str:
    """What the page says about a failed try: plain words, no internals."""
    text = public_error(exc)
    return text if text != SERVER_PROBLEM else ("The analysis failed because of a problem on the server "
                                                "(the details are in the worker's log).")
