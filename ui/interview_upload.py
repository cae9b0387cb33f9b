"""The Interview page's upload path: one recorded answer per question, checked on the page (size, header)
and analysed by a background job (ui/jobs.py); the step finds its job again from MongoDB after a reload."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st
from pymongo.errors import PyMongoError

from pipeline import interview as iv
from pipeline import jobs
from pipeline.questions import Question
from pipeline.safe_text import md
from pipeline.settings import Settings
from pipeline.store import Store
from ui.interview import InterviewState, go, show_stored_feedback

if TYPE_CHECKING:
    from streamlit.runtime.uploaded_file_manager import UploadedFile

log = logging.getLogger(__name__)

UPLOAD_TYPES = ["mp4", "webm", "mov", "mkv", "m4a", "mp3", "wav", "flac", "ogg"]
AUDIO_SUFFIXES = {".m4a", ".mp3", ".wav", ".flac", ".ogg"}
NO_DATABASE = ("The database cannot be reached right now, so this recording cannot be queued for analysis; "
               "nothing was stored. Try again in a minute.")
POLL_SECONDS = 1.0  # how often the progress of a queued recording is read again


def _release_upload(upload: UploadedFile) -> None:
    """Drop Streamlit's in-memory copy of the upload now instead of at the end of the session."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is not None:
        # The in-memory manager (Streamlit's only one) has it; its Protocol does not declare it.
        ctx.uploaded_file_mgr.remove_file(ctx.session_id, upload.file_id)  # type: ignore[attr-defined]
    upload.close()


def media_kind(filename: str) -> str:
    """"audio" or "video", by the file's extension (the uploader only takes UPLOAD_TYPES)."""
    return "audio" if Path(filename).suffix.lower() in AUDIO_SUFFIXES else "video"


def job_owner(session_id: str) -> str:
    """Who the job counts against: the signed-in user, else this candidate's session."""
    from ui.session import current_user

    user = current_user()
    return str(user["username"]) if user is not None else f"candidate:{session_id}"


def _check_recording(path: Path, kind: str, settings: Settings) -> None:
    """What the page can refuse from the header alone (nothing decoded): unreadable, too long, no stream."""
    from pipeline.media import MediaError, check_duration, probe

    check_duration(path, settings.media.max_answer_seconds)
    info = probe(path)
    if kind == "video" and not info.has_video:
        raise MediaError(f"{path}: no video stream", public="The file contains no video.")
    if kind == "audio" and not info.has_audio:
        raise MediaError(f"{path}: no audio stream", public="The file contains no audio.")


def _submit(state: InterviewState, q: Question, upload: UploadedFile, settings: Settings, db: Any) -> None:
    """Check the file, keep it in MongoDB as a job's input and queue the job; a refusal is said plainly."""
    from pipeline.media import MediaError
    from pipeline.uploads import UploadTooLargeError, public_error, saved_upload
    from ui.jobs import QUEUE_UNAVAILABLE, job_client

    kind = media_kind(upload.name)
    try:
        with saved_upload(upload, upload.name, upload.size, settings) as path:
            _check_recording(path, kind, settings)
            client = job_client()
            if client is None:
                state["upload_error"] = QUEUE_UNAVAILABLE
                return
            spec = jobs.JobSpec(owner=job_owner(state["session_id"]), question=q.question, reference=q.reference,
                                key_points=tuple(q.key_points), candidate=state["candidate"], role="upload",
                                source="upload", session_id=state["session_id"], index=state["index"],
                                media_kind=kind, filename=upload.name)
            with path.open("rb") as stream:
                submitted = client.submit(db, spec, stream, upload.name, path.stat().st_size)
            log.info("upload queued as job %s (new: %s)", submitted.job["_id"], submitted.created)
    except (jobs.QueueFullError, UploadTooLargeError, MediaError) as exc:
        state["upload_error"] = str(exc) if isinstance(exc, jobs.QueueFullError) else public_error(exc)
    except PyMongoError:
        log.warning("upload not queued: database unreachable", exc_info=True)
        state["upload_error"] = NO_DATABASE
    except Exception as exc:  # disk full, broker trouble beyond what send() absorbs: plain words only
        log.exception("queueing an uploaded answer failed")
        state["upload_error"] = public_error(exc)
    finally:
        _release_upload(upload)
        state["upload_try"] = state.get("upload_try", 0) + 1


def _result_row(db: Any, session_id: str, job: dict[str, Any], question: str) -> dict[str, Any]:
    """This answer's row of the session summary, read from the answer as stored."""
    found = iv.stored_answer(db, session_id, job["answer_id"])
    if found is not None:
        answer = found[0]
        return {"status": answer.get("status", "complete"), "grade": answer.get("grade"),
                "metrics": answer.get("metrics"), "transcript": answer.get("transcript", ""), "question": question,
                "index": job["index"], "answer_id": job["answer_id"]}
    result = job.get("result") or {}  # the job's own summary of the same stored answer
    grade = {"score": result["grade"], "band": result.get("band")} if result.get("grade") is not None else None
    return {"status": result.get("status") or "complete", "grade": grade, "metrics": None,
            "transcript": result.get("transcript", ""), "question": question, "index": job["index"],
            "answer_id": job["answer_id"]}


def _finish(state: InterviewState, questions: list[Question], job: dict[str, Any], db: Any) -> None:
    """The job stored this question's answer: count it, keep its feedback, go to the next step."""
    q = questions[state["index"]]
    if not any(r.get("answer_id") == job["answer_id"] or r.get("_id") == job["answer_id"] for r in state["results"]):
        state["results"].append(_result_row(db, state["session_id"], job, q.question))
    state["last_feedback"] = {"answer_id": job["answer_id"], "question": q.question, "frames_stored": True}
    state["index"] += 1
    go(state, "upload" if state["index"] < len(questions) else "summary")


def _read_job(db: Any, state: InterviewState) -> dict[str, Any] | None:
    try:
        return jobs.for_answer(db, state["session_id"], state["index"])
    except PyMongoError as exc:
        log.warning("job lookup failed: %s", exc)
        return None


@st.fragment(run_every=POLL_SECONDS)
def job_panel(state: InterviewState, questions: list[Question], store: Store, job_id: str) -> None:
    """The queued recording's live progress, re-read every second; on its end the whole page runs again."""
    from ui.jobs import show_job_progress

    db = store.db
    job = None
    if db is not None:
        try:
            job = jobs.get(db, job_id)
        except PyMongoError as exc:
            log.warning("job progress lookup failed: %s", exc)
    if job is None:
        st.info("The progress of your recording cannot be read right now (the database is not answering); it "
                "is still queued and this updates once the database is back.", icon=":material/cloud_off:")
        return
    if job["status"] not in jobs.ACTIVE:
        st.rerun(scope="app")  # done, failed or cancelled: the step shows the feedback or the uploader
    show_job_progress(job)
    if job.get("cancel_requested"):
        st.caption("Stopping the analysis…")
        return
    st.caption("You can leave or reload this page: the analysis goes on, and this question shows its result "
               "when you come back through the resume offer.")
    if st.button("Cancel", key=f"cancel_{job_id}"):
        status = jobs.cancel(db, job_id)
        if status == jobs.CANCELLED:
            st.rerun(scope="app")


def upload_step(state: InterviewState, questions: list[Question], settings: Settings, store: Store) -> None:
    """The current question: its queued recording's progress or result, else a file uploader whose
    "Analyse" checks the file and queues it as this question's answer (the page returns at once)."""
    from pipeline.media import format_duration

    q = questions[state["index"]]
    st.subheader(f"Question {state['index'] + 1} of {len(questions)}")
    st.markdown(f"**{md(q.question)}**")
    db = store.db
    job = _read_job(db, state) if db is not None else None
    if job is not None and job["status"] in jobs.ACTIVE:
        job_panel(state, questions, store, job["_id"])
        return
    if job is not None and job["status"] == jobs.DONE:
        _finish(state, questions, job, db)
    if job is not None and job["status"] == jobs.FAILED:
        from ui.jobs import show_job_progress

        show_job_progress(job)  # its reason; a new upload of the file queues it again
    # A fresh key after every attempt gives an empty widget (a file_uploader cannot be cleared from code).
    upload_key = f"upload_{state['index']}_{state.get('upload_try', 0)}"
    upload = st.file_uploader("Recorded answer (video with sound, or audio only)", key=upload_key,
                              type=UPLOAD_TYPES, max_upload_size=settings.media.max_upload_mb)
    st.caption(f"One answer per file: at most {format_duration(settings.media.max_answer_seconds)} long "
               f"and {settings.media.max_upload_mb} MB.")
    if state.get("upload_error"):
        st.error(state.pop("upload_error"))  # our own sentences, no user text
    if upload is not None and st.button("Analyse", type="primary", key="analyse"):
        if db is None:
            _release_upload(upload)
            state["upload_try"] = state.get("upload_try", 0) + 1
            state["upload_error"] = NO_DATABASE
        else:
            _submit(state, q, upload, settings, db)
        st.rerun()
    feedback = state.get("last_feedback")
    if feedback:
        show_stored_feedback(state, feedback, store)
