"""Interview page (candidate): consent, questions, device check, live answers, feedback per answer."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import streamlit as st
from pymongo.errors import PyMongoError

from pipeline import interview as iv
from pipeline.questions import custom_question, load_builtin_sets
from pipeline.safe_text import md
from pipeline.settings import get_settings
from pipeline.writer import JournalError
from ui.navigation import run_inside_app
from ui.session import current_user, get_sidecar, get_store

log = logging.getLogger(__name__)

run_inside_app()

st.title("Interview")
st.write(
    "Answer interview questions on camera. MockAI transcribes your speech, follows your facial "
    "expression and eye contact, grades each answer against its reference and gives feedback "
    "with the evidence behind every score."
)

settings = get_settings()
store = get_store()
sidecar = get_sidecar()
state = st.session_state.setdefault("interview", {"step": "consent"})

if sidecar is None:
    st.warning("The analysis engine is switched off on this server (MOCKAI_SIDECAR_ENABLED=false): "
               "interviews cannot be recorded here. Coaches can still browse sessions.")
    st.stop()


def go(step: str) -> None:
    state["step"] = step
    st.rerun()


RESUME_UNAVAILABLE = ("Resume unavailable right now: the database cannot be reached, so an unfinished session "
                      "cannot be looked up. You can still start a new session: it is recorded and stored once the "
                      "database is back.")


def resume_offer(candidate_user: str | None) -> None:
    """Offer to resume an unfinished session, never found by name: only the one this browser's
    resume token names (``?resume=`` in the URL, set when the session started, so a reload of
    that tab finds it), or the signed-in candidate's own latest one."""
    token = st.query_params.get(iv.RESUME_PARAM)
    session_id = None
    if token:
        try:
            session_id = iv.resume_token_session(token, settings)
        except iv.ResumeTokenError as exc:
            st.error(str(exc), icon=":material/link_off:")
    db = store.db
    if db is None:  # said even with no token: a signed-in candidate cannot be recognised either
        st.info(RESUME_UNAVAILABLE, icon=":material/cloud_off:")
        return
    if session_id is None and candidate_user is None:
        return  # nothing this browser holds could resume anything
    try:
        unfinished = iv.unfinished_session(db, session_id=session_id, candidate_user=candidate_user)
        if unfinished is None:
            if session_id is not None:
                st.caption("The session of this resume link is finished or no longer exists.")
            return
        index, done = iv.resume_point(db, unfinished)
    except PyMongoError as exc:
        logging.getLogger(__name__).warning("resume lookup failed: %s", exc)
        st.info(RESUME_UNAVAILABLE, icon=":material/cloud_off:")
        return
    total = len(unfinished["questions"])
    st.info(f"You have an unfinished session from {unfinished['started_at']:%Y-%m-%d %H:%M} "
            f"({len(done)} of {total} answers complete). What was captured is kept; an interrupted "
            "answer is marked incomplete and you can answer that question again.")
    if st.button("Resume that session", key="resume"):
        state.update(session_id=unfinished["_id"], questions=unfinished["questions"], index=min(index, total - 1),
                     results=done, candidate=unfinished["candidate"], session_settings=unfinished.get("settings"))
        remember_session(unfinished["_id"])
        go(("device" if unfinished.get("source") != "upload" else "upload") if index < total else "summary")


def show_stored_feedback(feedback: dict[str, Any]) -> None:
    """Feedback on the last answer, rendered from the answer as stored (what the report shows),
    never from an in-memory copy; said plainly while the stored answer is not there yet."""
    from ui.cards import show_feedback

    found = None
    db = store.db
    if db is not None:
        try:
            found = iv.stored_answer(db, state["session_id"], feedback["answer_id"])
        except PyMongoError as exc:
            log.warning("feedback lookup failed: %s", exc)
    if found is None:
        st.subheader(f"Feedback: {md(feedback.get('question', ''))}")
        if feedback.get("error"):
            st.warning(md(feedback["error"]))
        st.info("Your answer is kept, but it is not in the database yet, so there is no score to show here. "
                "Its feedback appears in the session report once it is stored.", icon=":material/cloud_sync:")
        return
    answer, frames = found
    if not feedback.get("frames_stored", True):
        st.caption("Some frame samples of this answer are not in the database yet: expression and eye contact "
                   "below may be incomplete (the report shows them once they are stored).")
    show_feedback({**answer, "answer_id": answer["_id"], "question": feedback.get("question", ""),
                   "error": feedback.get("error")}, frames, state.get("session_settings"))


def remember_session(session_id: str) -> None:
    """Put this session's resume token in the URL: a reload of this tab can resume it, another browser cannot."""
    try:
        st.query_params[iv.RESUME_PARAM] = iv.resume_token(session_id, settings)
    except (OSError, ValueError) as exc:  # no key file (read-only disk): recording goes on without resume
        logging.getLogger(__name__).warning("no resume token for session %s: %s", session_id, exc)


# ---------------------------------------------------------------- 1. consent
if state["step"] == "consent":
    st.markdown(iv.CONSENT_TEXT)
    keep_audio = st.checkbox("Also keep my raw audio with the session (optional)", key="keep_audio")
    agreed = st.checkbox("I understand and agree to be recorded for this mock interview", key="consent_box")
    if st.button("Continue", type="primary", disabled=not agreed, key="consent_continue"):
        state["keep_audio"] = keep_audio
        go("setup")
    st.stop()

# ---------------------------------------------------------------- 2. questions
if state["step"] == "setup":
    sets = {s.id: s for s in load_builtin_sets()}
    user = current_user()  # optional: anonymous practice works; a signed-in candidate's sessions are theirs
    if user is not None and user.get("role") == "candidate":
        st.session_state.setdefault("candidate_name", user.get("display_name") or user["username"])
    owner = user["username"] if user is not None and user.get("role") == "candidate" else None
    resume_offer(owner)
    name = st.text_input("Your name", key="candidate_name", max_chars=200)
    choice = st.radio("Questions", ["A question set", "My own question"], horizontal=True, key="set_kind")
    questions, role, set_id = [], "custom", None
    if choice == "A question set":
        set_id = st.selectbox("Question set", list(sets), format_func=lambda k: sets[k].title, key="set_id")
        qset = sets[set_id]
        st.caption(qset.description)
        count = int(st.number_input("How many questions", 1, len(qset.questions), min(3, len(qset.questions)),
                                    key="q_count"))
        questions, role = list(qset.questions[:count]), qset.role
    else:
        q = st.text_area("Question", key="custom_q", max_chars=500)
        ref = st.text_area("Reference answer (what a strong answer says)", key="custom_ref", max_chars=3000)
        kps = st.text_area("Key points, one per line (optional)", key="custom_kps", max_chars=2000)
        if q.strip():
            try:
                questions = [custom_question(q, ref, kps.splitlines())]
            except ValueError as exc:
                st.error(str(exc))
    mode = st.radio("How will you answer?", ["Live, on camera", "Upload a recording"], horizontal=True, key="mode")
    ready = bool(name.strip() and questions)
    if st.button("Next", type="primary", disabled=not ready, key="setup_next"):
        session = iv.new_session_doc(name, role, set_id, settings, source="live" if mode.startswith("Live") else "upload",
                                     keep_audio=state.get("keep_audio", False))
        session["questions"] = [q.to_dict() for q in questions]  # lets a reloaded page resume
        if user is not None and user.get("role") == "candidate":
            session["candidate_user"], session["coach"] = user["username"], user.get("coach")
        try:
            store.writer.insert("sessions", session)  # journalled first: works with the database down
        except JournalError:  # refused, not acknowledged: say so and keep the form as it is
            log.warning("session insert refused by the journal", exc_info=True)
            st.error("The server cannot save a new session right now (its local journal is full or its disk "
                     "cannot be written). Nothing was recorded; please try again in a few minutes.")
            st.stop()
        state.update(session_id=session["_id"], questions=[q.to_dict() for q in questions], index=0, results=[],
                     candidate=session["candidate"], session_settings=session["settings"])
        remember_session(session["_id"])
        go("device" if mode.startswith("Live") else "upload")
    st.stop()

from pipeline.questions import Question  # noqa: E402

questions = [Question(**{**q, "key_points": tuple(q["key_points"])}) for q in state["questions"]]

# ---------------------------------------------------------------- upload path
if state["step"] == "upload":
    import logging

    from streamlit.runtime.uploaded_file_manager import UploadedFile

    from pipeline.media import MediaError, format_duration
    from pipeline.uploads import UploadTooLargeError, public_error, saved_upload
    from sidecar.analyze import AnalyzeRequest, analyze

    def _release_upload(upload: UploadedFile) -> None:
        """Drop Streamlit's in-memory copy of the upload now instead of at the end of the session."""
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        if ctx is not None:
            # The in-memory manager (Streamlit's only one) has it; its Protocol does not declare it.
            ctx.uploaded_file_mgr.remove_file(ctx.session_id, upload.file_id)  # type: ignore[attr-defined]
        upload.close()

    q = questions[state["index"]]
    st.subheader(f"Question {state['index'] + 1} of {len(questions)}")
    st.markdown(f"**{md(q.question)}**")
    # A fresh key after every attempt gives an empty widget (a file_uploader cannot be cleared from code).
    upload_key = f"upload_{state['index']}_{state.get('upload_try', 0)}"
    upload = st.file_uploader("Recorded answer (video with sound, or audio only)", key=upload_key,
                              type=["mp4", "webm", "mov", "mkv", "m4a", "mp3", "wav", "flac", "ogg"],
                              max_upload_size=settings.media.max_upload_mb)
    st.caption(f"One answer per file: at most {format_duration(settings.media.max_answer_seconds)} long "
               f"and {settings.media.max_upload_mb} MB.")
    if state.get("upload_error"):
        st.error(state.pop("upload_error"))
    if upload is not None and st.button("Analyse", type="primary", key="analyse"):
        suffix = Path(upload.name).suffix.lower()
        report = None
        try:
            with saved_upload(upload, upload.name, upload.size, settings) as path:
                bar = st.progress(0.0, text="Analysing the recording…")
                is_audio = suffix in {".m4a", ".mp3", ".wav", ".flac", ".ogg"}
                request = AnalyzeRequest(q.question, q.reference, tuple(q.key_points),
                                         video=None if is_audio else path, audio=path if is_audio else None,
                                         candidate=state["candidate"], role="upload")
                report = analyze(request, settings, store=True, sidecar=sidecar, session_id=state["session_id"],
                                 index=state["index"],
                                 progress=lambda kind, n: bar.progress(min(1.0, n / 200), text=f"{kind}: {n}"))
                bar.progress(1.0, text="Done")
        except Exception as exc:  # corrupt file, too long, too big, engine trouble: say it plainly, keep the session
            if not isinstance(exc, MediaError | UploadTooLargeError):
                logging.getLogger(__name__).exception("analysis of an uploaded answer failed")
            state["upload_error"] = public_error(exc)
        finally:
            _release_upload(upload)
            state["upload_try"] = state.get("upload_try", 0) + 1
        if report is None:
            st.rerun()
        state["results"].append({"status": "complete", "grade": report["grade"], "metrics": report["metrics"],
                                 "transcript": report["transcript"], "question": q.question})
        flushed = sidecar.flush_frames(state["session_id"], report["answer_id"])  # its frames in MongoDB first
        state["last_feedback"] = {"answer_id": report["answer_id"], "question": q.question,
                                  "frames_stored": bool(flushed and flushed.stored)}
        state["index"] += 1
        go("upload" if state["index"] < len(questions) else "summary")
    st.stop()

# ---------------------------------------------------------------- live media (device check + interview)
from streamlit_webrtc import WebRtcMode, webrtc_streamer  # noqa: E402

from sidecar.capture import Capture  # noqa: E402

capture: Capture = st.session_state.setdefault(
    "capture", Capture(sidecar, settings.capture.frame_sample_every, settings.capture.frame_max_width)
)
if state["step"] in ("device", "interview"):
    media = webrtc_streamer(
        key="mockai-media",
        mode=WebRtcMode.SENDONLY,
        rtc_configuration={"iceServers": settings.capture.ice_servers},
        media_stream_constraints={"video": {"width": 640, "height": 480}, "audio": True},
        queued_video_frames_callback=capture.on_video_queued,
        queued_audio_frames_callback=capture.on_audio_queued,
        async_processing=True,
    )
    state.setdefault("media_started_at", time.time())


@st.fragment(run_every=1.0)
def live_panel() -> None:
    stats = capture.stats()
    p99 = stats["video_p99_ms"]
    st.caption(f"frames received: {stats['frames_seen']} · sampled: {stats['frames_sampled']} · "
               f"audio: {stats['audio_seconds']:.1f} s" + (f" · callback p99: {p99:.2f} ms" if p99 else ""))
    answer = state.get("answer")
    frame = sidecar.face_status(state["session_id"])
    if state["step"] == "device":
        if capture.preview is not None:  # SENDONLY has no local video: show the last sampled frame
            st.image(capture.preview, channels="BGR", width=320, caption="Camera preview")
        for level, msg in iv.device_advice(stats, frame, capture.audio_level, time.time() - state["media_started_at"]):
            {"ok": st.success, "warn": st.warning, "error": st.error}[level](msg)
        return
    if answer is None:
        return
    words = sidecar.partial_words(answer["answer_id"])
    spoken = max(0.0, time.time() - answer["started_ms"] / 1000)
    cols = st.columns(3)
    cols[0].metric("Face", "found" if frame and frame.face else "not found")
    cols[1].metric("Pace", f"{len(words) / spoken * 60:.0f} wpm" if spoken > 5 and words else "—")
    cols[2].metric("Time", f"{spoken:.0f} s")
    spoken_text = " ".join(str(w["word"]).strip() for w in words)
    st.markdown("**Live transcript:** " + (md(spoken_text) if spoken_text else "_listening…_"))


# ---------------------------------------------------------------- 3. device check
if state["step"] == "device":
    st.subheader("Device check")
    st.write("Press **START** above and allow camera and microphone. Nothing is stored during this check.")
    capture.aim(state["session_id"], "__preview__")
    live_panel()
    if st.button("Start the interview", type="primary", key="to_interview"):
        if capture.frames_seen > 0 and capture.audio_seconds > 0:
            capture.aim(state["session_id"], None)
            go("interview")
        st.error("Camera and microphone are not both working yet: press START and allow them.")
    st.stop()

# ---------------------------------------------------------------- 4. interview
if state["step"] == "interview":
    q = questions[state["index"]]
    st.subheader(f"Question {state['index'] + 1} of {len(questions)}")
    st.markdown(f"### {md(q.question)}")
    st.caption(f"Suggested length: about {q.seconds} s")
    if not (media.state.playing):
        st.warning("Camera and microphone are not connected: press START above.")
    answer = state.get("answer")
    if answer is None:
        if st.button("Start answer", type="primary", disabled=not media.state.playing, key="start_answer"):
            start = iv.answer_start(state["session_id"], state["index"], q)
            sidecar.start_answer(start)
            capture.aim(state["session_id"], start.answer_id)
            state["answer"] = {"answer_id": start.answer_id, "started_ms": start.started_ms}
            st.rerun()
        feedback = state.get("last_feedback")
        if feedback:
            show_stored_feedback(feedback)
    else:
        live_panel()
        if st.button("Finish answer", type="primary", key="finish_answer"):
            capture.aim(state["session_id"], None)
            finished = time.perf_counter()
            capture.flush(1.0)  # the last sampled frames of this answer into the ring first
            sidecar.end_answer(answer["answer_id"], iv.now_ms(), capture=capture.stats())
            with st.spinner("Scoring your answer…"):
                done = sidecar.wait_result(answer["answer_id"], timeout=60)
                # The feedback reads the stored answer and its frame samples: wait for both writers.
                flushed = sidecar.flush_frames(state["session_id"], answer["answer_id"])
            result: dict[str, Any]
            if done is None:
                result = {"status": "incomplete", "grade": None, "metrics": None, "transcript": "",
                          "error": "The analysis did not finish in time; the answer is kept and will be scored."}
            else:
                result = dict(done)
                if done.get("held"):  # the journal refused it: the worker keeps it in memory and retries
                    from ui.status import held_answer_note

                    result["error"] = held_answer_note(result)
            result["question"] = q.question
            result["feedback_s"] = round(time.perf_counter() - finished, 3)
            state["results"].append(result)
            state["last_feedback"] = {"answer_id": answer["answer_id"], "question": q.question,
                                      "error": result.get("error"), "feedback_s": result["feedback_s"],
                                      "frames_stored": bool(flushed and flushed.stored)}
            state["answer"] = None
            state["index"] += 1
            go("interview" if state["index"] < len(questions) else "summary")
        if st.button("Discard and retry this question", key="retry_answer"):
            capture.aim(state["session_id"], None)
            sidecar.end_answer(answer["answer_id"], iv.now_ms(), status="incomplete")
            state["answer"] = None
            st.rerun()
    st.stop()

# ---------------------------------------------------------------- 5. summary
if state["step"] == "summary":
    summary = iv.summarise(state["results"], settings.grading.band_cutoffs)
    if state.get("last_feedback"):
        show_stored_feedback(state["last_feedback"])
    st.subheader("Session summary")
    cols = st.columns(4)
    cols[0].metric("Answers", summary.answered)
    cols[1].metric("Overall grade", f"{summary.mean_score:.0%}" if summary.mean_score is not None else "not graded")
    cols[2].metric("Band", summary.band or "—")
    cols[3].metric("Pace", f"{summary.mean_wpm:.0f} wpm" if summary.mean_wpm else "—")
    if summary.graded < summary.answered:
        st.info(f"{summary.answered - summary.graded} answer(s) had no gradable speech and were not scored.")
    if not state.get("closed"):
        try:
            store.writer.update("sessions", state["session_id"], {
                "status": "complete", "ended_at": datetime.now(UTC), "grade": summary.mean_score,
                "band": summary.band, "flags": summary.flags,
            })
            state["closed"] = True
        except JournalError:  # the answers are stored; only the session's closing line waits (retried next run)
            log.warning("session close refused by the journal", exc_info=True)
            st.warning("Your answers are saved, but the session could not be marked finished yet (the server "
                       "cannot write to its journal right now). Reload this page later to finish it.")
    st.page_link("pages/report.py", label="Open the full report", icon=":material/timeline:",
                 query_params={"session": state["session_id"]})
    if st.button("Start a new interview", key="restart"):
        st.session_state.pop("interview", None)
        st.query_params.pop(iv.RESUME_PARAM, None)
        st.rerun()
