"""Background jobs as MongoDB records (collection ``jobs``): the source of truth for what is queued,
running, done or failed. The broker (Redis, sidecar/job_queue.py) only carries "run job X"; every
state change here is one atomic update, so a duplicated or redelivered message runs a job at most once
at a time and stores its answer once (a job's answer id is fixed when it is submitted)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from pipeline.job_inputs import InputFile

COLLECTION = "jobs"
KINDS = ("analyse", "reanalyse")
WAITING, RUNNING, RETRYING, DONE, FAILED, CANCELLED = "waiting", "running", "retrying", "done", "failed", "cancelled"
STATES = (WAITING, RUNNING, RETRYING, DONE, FAILED, CANCELLED)
ACTIVE = (WAITING, RUNNING, RETRYING)  # counted against a user's queue bound
FINISHED = (DONE, FAILED, CANCELLED)
# What a stage means to the person watching the job.
STAGES = {
    "waiting": "Waiting for a worker", "starting": "Starting", "fetching": "Fetching the recording",
    "video": "Analysing the video frames", "speech": "Transcribing and grading the answer",
    "storing": "Saving the results", "done": "Done", "failed": "Failed", "cancelled": "Cancelled",
    "retrying": "Waiting to try again",
}
LOST_WORKER = ("The worker analysing this recording stopped {n} times (crash or restart); it is not tried again. "
               "Retry it once the workers are healthy.")


class QueueFullError(ValueError):
    """The user already has ``max_queued_per_user`` jobs waiting or running."""

    def __init__(self, active: int, limit: int) -> None:
        super().__init__(f"You already have {active} recordings waiting or being analysed; at most {limit} can "
                         "be queued per user. Wait for some to finish, then submit the rest.")
        self.active, self.limit = active, limit


@dataclass(frozen=True)
class JobSpec:
    """What a job analyses and where its answer goes; stored as the job's ``spec``."""

    owner: str  # who submitted it (username, or "cli"): the queue bound and the Batch view's filter
    question: str
    reference: str = ""
    key_points: tuple[str, ...] = ()
    kind: str = "analyse"  # "analyse" (a recording) | "reanalyse" (a stored answer's kept audio)
    candidate: str = "batch"
    role: str = "upload"
    source: str = "upload"  # "upload" (Interview page), "batch" (manifest / Batch page / CLI), "reanalyse"
    session_id: str | None = None  # join this stored session as answer ``index``; None: a session of its own
    index: int = 0
    media_kind: str = "video"  # "video" (video, with its sound) | "audio"
    filename: str = ""  # shown to the user (escaped where shown); never used as a path
    answer_id: str | None = None  # reanalyse: the stored answer; analyse: fixed at submit
    batch_id: str | None = None
    question_set: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown job kind {self.kind!r}")
        if self.media_kind not in ("video", "audio"):
            raise ValueError(f"unknown media kind {self.media_kind!r}")

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["key_points"] = list(self.key_points)
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> JobSpec:
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in doc.items() if k in known}
        values["key_points"] = tuple(values.get("key_points") or ())
        return cls(**values)


@dataclass
class Submitted:
    job: dict[str, Any]
    created: bool  # False: the same submission was already queued or done (nothing new to run)
    needs_sending: bool = field(default=False)  # True: the caller must put it on the broker


def _now() -> datetime:
    return datetime.now(UTC)


def job_id_for(spec: JobSpec, content_sha256: str) -> str:
    """The same submission (who, where it goes, the same bytes) always gets the same id: a duplicate
    submission finds the first job instead of storing the answer twice."""
    where = ([spec.session_id, str(spec.index)] if spec.session_id else
             [spec.candidate, spec.role, spec.question, spec.reference, "\n".join(spec.key_points), spec.batch_id or ""])
    key = "\x1f".join([spec.kind, spec.owner, *where, spec.answer_id or "", content_sha256])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def session_id_for(job_id: str) -> str:
    """The session a job of its own stores its answer in (fixed, so a retry joins the same one)."""
    return hashlib.sha256(f"session\x1f{job_id}".encode()).hexdigest()[:32]


def active_count(db: Any, owner: str) -> int:
    return int(db[COLLECTION].count_documents({"owner": owner, "status": {"$in": list(ACTIVE)}}))


def check_queue_room(db: Any, owner: str, limit: int, adding: int = 1) -> None:
    """Raise QueueFullError when ``owner`` cannot queue ``adding`` more jobs."""
    active = active_count(db, owner)
    if active + adding > limit:
        raise QueueFullError(active, limit)


def submit(db: Any, spec: JobSpec, media: InputFile | None, max_attempts: int,
           content_sha256: str | None = None) -> Submitted:
    """Record a job for ``spec`` whose input is ``media`` (already stored, pipeline.job_inputs).

    A submission identical to an earlier one returns that job (``created`` False) and drops the new
    copy of the input; one that had failed or was cancelled is queued again with the new copy.
    """
    sha = content_sha256 or (media.sha256 if media is not None else "")
    job_id = job_id_for(spec, sha)
    answer_id = spec.answer_id if spec.kind == "reanalyse" else job_id
    session_id = spec.session_id or session_id_for(job_id)
    now = _now()
    doc = {
        "_id": job_id, "kind": spec.kind, "owner": spec.owner, "status": WAITING, "stage": "waiting",
        "progress": 0.0, "spec": spec.to_doc(), "input": media.to_doc() if media is not None else None,
        "answer_id": answer_id, "session_id": session_id, "index": spec.index, "batch_id": spec.batch_id,
        "created_at": now, "updated_at": now, "attempts": 0, "max_attempts": max_attempts, "worker": None,
        "heartbeat_at": None, "sent_at": None, "error": None, "result": None, "cancel_requested": False,
        "history": [],
    }
    try:
        db[COLLECTION].insert_one(doc)
        return Submitted(doc, created=True, needs_sending=True)
    except DuplicateKeyError:
        pass
    old_input = None
    reopened = db[COLLECTION].find_one_and_update(
        {"_id": job_id, "status": {"$in": [FAILED, CANCELLED]}},
        {"$set": {"status": WAITING, "stage": "waiting", "progress": 0.0, "attempts": 0, "error": None,
                  "cancel_requested": False, "worker": None, "updated_at": now, "sent_at": None,
                  "input": media.to_doc() if media is not None else None},
         "$push": {"history": {"event": "submitted again", "at": now}}},
        return_document=ReturnDocument.BEFORE)
    if reopened is not None:
        old_input = reopened.get("input")
        if media is not None and old_input and old_input.get("file_id") != media.file_id:
            _drop_input(db, old_input)
        job = db[COLLECTION].find_one({"_id": job_id})
        return Submitted(job, created=True, needs_sending=True)
    if media is not None:
        _drop_input(db, media.to_doc())  # the first copy is the job's input
    return Submitted(db[COLLECTION].find_one({"_id": job_id}) or doc, created=False)


def _drop_input(db: Any, input_doc: dict[str, Any] | None) -> None:
    from pipeline.job_inputs import delete_input

    if input_doc and input_doc.get("file_id") is not None:
        delete_input(db, input_doc["file_id"])


def mark_sent(db: Any, job_id: str) -> None:
    db[COLLECTION].update_one({"_id": job_id}, {"$set": {"sent_at": _now()}})


def get(db: Any, job_id: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = db[COLLECTION].find_one({"_id": job_id})
    return found


def for_answer(db: Any, session_id: str, index: int) -> dict[str, Any] | None:
    """The latest job that stores answer ``index`` of ``session_id`` (the upload step finds it again
    after a reload), cancelled ones left out."""
    found: dict[str, Any] | None = db[COLLECTION].find_one(
        {"session_id": session_id, "index": index, "status": {"$ne": CANCELLED}}, sort=[("created_at", -1)])
    return found


# ------------------------------------------------------------------------------------ the worker side


def claim(db: Any, job_id: str, worker: str, stale_seconds: float) -> dict[str, Any] | None:
    """Take ``job_id`` for ``worker``: a waiting or retrying job, or a running one whose worker went
    silent. None when it is done, cancelled, running elsewhere, or out of attempts (then failed)."""
    now = _now()
    stale = now - timedelta(seconds=stale_seconds)
    job: dict[str, Any] | None = db[COLLECTION].find_one_and_update(
        {"_id": job_id, "cancel_requested": {"$ne": True},
         "$or": [{"status": {"$in": [WAITING, RETRYING]}}, {"status": RUNNING, "heartbeat_at": {"$lt": stale}}]},
        {"$set": {"status": RUNNING, "worker": worker, "heartbeat_at": now, "started_at": now, "updated_at": now,
                  "stage": "starting", "progress": 0.0},
         "$inc": {"attempts": 1},
         "$push": {"history": {"event": "started", "worker": worker, "at": now}}},
        return_document=ReturnDocument.AFTER)
    if job is None:
        _cancel_if_requested(db, job_id)
        return None
    if job["attempts"] > job.get("max_attempts", 1):
        n = job["attempts"] - 1
        db[COLLECTION].update_one({"_id": job_id, "worker": worker, "status": RUNNING}, {"$set": {
            "status": FAILED, "stage": "failed", "error": LOST_WORKER.format(n=n), "finished_at": now,
            "updated_at": now}})
        return None
    return job


def _cancel_if_requested(db: Any, job_id: str) -> None:
    """A waiting job cancelled while its message was on the way ends here as cancelled."""
    db[COLLECTION].update_one(
        {"_id": job_id, "cancel_requested": True, "status": {"$in": [WAITING, RETRYING]}},
        {"$set": {"status": CANCELLED, "stage": "cancelled", "finished_at": _now(), "updated_at": _now()}})


@dataclass(frozen=True)
class Beat:
    ours: bool  # False: the job was taken from this worker (it went silent too long) or finished
    cancel: bool  # the user asked to stop it


def beat(db: Any, job_id: str, worker: str, stage: str | None = None, progress: float | None = None) -> Beat:
    """The running job's heartbeat, with its stage and progress (0..1) when given."""
    fields: dict[str, Any] = {"heartbeat_at": _now(), "updated_at": _now()}
    if stage is not None:
        fields["stage"] = stage
    if progress is not None:
        fields["progress"] = round(max(0.0, min(1.0, float(progress))), 3)
    job = db[COLLECTION].find_one_and_update({"_id": job_id, "worker": worker, "status": RUNNING},
                                             {"$set": fields}, projection={"cancel_requested": 1},
                                             return_document=ReturnDocument.AFTER)
    if job is None:
        return Beat(ours=False, cancel=False)
    return Beat(ours=True, cancel=bool(job.get("cancel_requested")))


def finish(db: Any, job_id: str, worker: str, result: dict[str, Any]) -> bool:
    """Done, with a short result (grade, band, answer id); False when the job was no longer ours."""
    now = _now()
    res = db[COLLECTION].update_one(
        {"_id": job_id, "worker": worker, "status": RUNNING},
        {"$set": {"status": DONE, "stage": "done", "progress": 1.0, "result": result, "finished_at": now,
                  "updated_at": now, "error": None},
         "$push": {"history": {"event": "done", "worker": worker, "at": now}}})
    return bool(res.modified_count)


def attempt_failed(db: Any, job_id: str, worker: str, error: str, retry_in: float | None) -> str:
    """Record a failed try: ``retrying`` when ``retry_in`` seconds and attempts are left, else ``failed``
    with ``error`` (a plain sentence the page shows). Returns the new status ('' when not ours)."""
    now = _now()
    job = db[COLLECTION].find_one({"_id": job_id, "worker": worker, "status": RUNNING}, {"attempts": 1,
                                                                                        "max_attempts": 1})
    if job is None:
        return ""
    again = retry_in is not None and job["attempts"] < job.get("max_attempts", 1)
    status = RETRYING if again else FAILED
    fields: dict[str, Any] = {"status": status, "stage": status, "error": error, "updated_at": now}
    if again:
        fields["retry_at"] = now + timedelta(seconds=float(retry_in or 0))
    else:
        fields["finished_at"] = now
    db[COLLECTION].update_one({"_id": job_id, "worker": worker, "status": RUNNING}, {
        "$set": fields, "$push": {"history": {"event": status, "worker": worker, "error": error, "at": now}}})
    return status


def cancelled_while_running(db: Any, job_id: str, worker: str) -> None:
    now = _now()
    db[COLLECTION].update_one({"_id": job_id, "worker": worker, "status": RUNNING}, {
        "$set": {"status": CANCELLED, "stage": "cancelled", "finished_at": now, "updated_at": now},
        "$push": {"history": {"event": "cancelled", "worker": worker, "at": now}}})


def stale_running(db: Any, stale_seconds: float) -> list[str]:
    """Running jobs whose worker has not written a heartbeat for ``stale_seconds`` (it died)."""
    cutoff = _now() - timedelta(seconds=stale_seconds)
    return [d["_id"] for d in db[COLLECTION].find({"status": RUNNING, "heartbeat_at": {"$lt": cutoff}}, {"_id": 1})]


def requeue_stale(db: Any, job_id: str, stale_seconds: float) -> bool:
    """Put a job whose worker died back to waiting (the caller sends it again); False when it moved meanwhile."""
    now = _now()
    cutoff = now - timedelta(seconds=stale_seconds)
    job = db[COLLECTION].find_one_and_update(
        {"_id": job_id, "status": RUNNING, "heartbeat_at": {"$lt": cutoff}},
        {"$set": {"status": WAITING, "stage": "waiting", "updated_at": now, "sent_at": None},
         "$push": {"history": {"event": "worker lost", "at": now}}},
        projection={"worker": 1})
    return job is not None


def unsent_waiting(db: Any, resend_seconds: float) -> list[str]:
    """Waiting or retrying jobs never sent, or sent more than ``resend_seconds`` ago (the caller checks the
    broker before sending again: a message may simply be waiting its turn)."""
    cutoff = _now() - timedelta(seconds=resend_seconds)
    query = {"status": {"$in": [WAITING, RETRYING]}, "cancel_requested": {"$ne": True},
             "$or": [{"sent_at": None}, {"sent_at": {"$lt": cutoff}}]}
    return [d["_id"] for d in db[COLLECTION].find(query, {"_id": 1}).sort("created_at", 1).limit(1000)]


# ------------------------------------------------------------------------------------ the people side


def cancel(db: Any, job_id: str) -> str:
    """Cancel: a waiting job at once, a running one at its next heartbeat. Returns the status it now has."""
    now = _now()
    res = db[COLLECTION].update_one({"_id": job_id, "status": {"$in": [WAITING, RETRYING]}}, {
        "$set": {"status": CANCELLED, "stage": "cancelled", "cancel_requested": True, "finished_at": now,
                 "updated_at": now}, "$push": {"history": {"event": "cancelled", "at": now}}})
    if res.modified_count:
        return CANCELLED
    db[COLLECTION].update_one({"_id": job_id, "status": RUNNING}, {"$set": {"cancel_requested": True,
                                                                             "updated_at": now}})
    job = get(db, job_id)
    return str(job["status"]) if job else ""


def retry(db: Any, job_id: str) -> bool:
    """Queue a failed or cancelled job again with fresh attempts; True when the caller must send it."""
    now = _now()
    res = db[COLLECTION].update_one(
        {"_id": job_id, "status": {"$in": [FAILED, CANCELLED]}, "input": {"$ne": None}},
        {"$set": {"status": WAITING, "stage": "waiting", "progress": 0.0, "attempts": 0, "error": None,
                  "cancel_requested": False, "worker": None, "updated_at": now, "sent_at": None},
         "$push": {"history": {"event": "retried", "at": now}}})
    if res.modified_count:
        return True
    # a reanalyse job has no input of its own: its audio is the stored answer's
    res = db[COLLECTION].update_one(
        {"_id": job_id, "status": {"$in": [FAILED, CANCELLED]}, "kind": "reanalyse"},
        {"$set": {"status": WAITING, "stage": "waiting", "progress": 0.0, "attempts": 0, "error": None,
                  "cancel_requested": False, "worker": None, "updated_at": now, "sent_at": None}})
    return bool(res.modified_count)


def list_jobs(db: Any, owner: str | None = None, batch_id: str | None = None,
              statuses: Iterable[str] | None = None, limit: int = 200) -> list[dict[str, Any]]:
    query: dict[str, Any] = {}
    if owner is not None:
        query["owner"] = owner
    if batch_id is not None:
        query["batch_id"] = batch_id
    if statuses is not None:
        query["status"] = {"$in": list(statuses)}
    return list(db[COLLECTION].find(query, {"history": 0}).sort("created_at", -1).limit(limit))


def counts(db: Any, owner: str | None = None, batch_id: str | None = None) -> dict[str, int]:
    """How many jobs are in each state (every state present, zeros included)."""
    match: dict[str, Any] = {}
    if owner is not None:
        match["owner"] = owner
    if batch_id is not None:
        match["batch_id"] = batch_id
    out = dict.fromkeys(STATES, 0)
    for row in db[COLLECTION].aggregate([{"$match": match}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}]):
        out[str(row["_id"])] = int(row["n"])
    return out


def per_worker(db: Any, owner: str | None = None) -> dict[str, dict[str, int]]:
    """Per worker, how many of its jobs are running, done and failed."""
    match: dict[str, Any] = {"worker": {"$ne": None}}
    if owner is not None:
        match["owner"] = owner
    out: dict[str, dict[str, int]] = {}
    pipeline = [{"$match": match}, {"$group": {"_id": {"w": "$worker", "s": "$status"}, "n": {"$sum": 1}}}]
    for row in db[COLLECTION].aggregate(pipeline):
        out.setdefault(str(row["_id"]["w"]), dict.fromkeys(STATES, 0))[str(row["_id"]["s"])] = int(row["n"])
    return out


# ------------------------------------------------------------------------------------ workers

WORKERS = "job_workers"  # one document per worker process: what the Batch view lists


def worker_seen(db: Any, name: str, state: str, job_id: str | None = None, **info: Any) -> None:
    """A worker says it is alive: ``state`` "warming" (loading models), "ready", "busy" or "stopped"."""
    now = _now()
    db[WORKERS].update_one({"_id": name}, {"$set": {"state": state, "job_id": job_id, "seen_at": now, **info},
                                           "$setOnInsert": {"first_seen_at": now}}, upsert=True)


def list_workers(db: Any, fresh_seconds: float) -> list[dict[str, Any]]:
    """Workers seen in the last day, each with ``alive`` (seen within ``fresh_seconds``)."""
    now = _now()
    out = []
    for w in db[WORKERS].find({"seen_at": {"$gt": now - timedelta(days=1)}}).sort("_id", 1):
        seen = w["seen_at"] if w["seen_at"].tzinfo else w["seen_at"].replace(tzinfo=UTC)
        w["alive"] = w.get("state") != "stopped" and (now - seen).total_seconds() <= fresh_seconds
        out.append(w)
    return out
