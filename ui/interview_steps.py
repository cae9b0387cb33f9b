"""The Interview page's steps before and after recording: consent, question setup (which starts
the session) and the session summary (which closes it)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import streamlit as st

from pipeline import interview as iv
from pipeline.questions import Question, custom_question, load_builtin_sets
from pipeline.settings import Settings
from pipeline.store import Store
from pipeline.writer import JournalError
from ui.interview import STATE_KEY, InterviewState, go, remember_session, resume_offer, show_stored_feedback
from ui.session import current_user

log = logging.getLogger(__name__)


def consent_step(state: InterviewState) -> None:
    """1. What is recorded and kept; the candidate agrees (and may opt in to keeping raw audio)."""
    st.markdown(iv.CONSENT_TEXT)
    keep_audio = st.checkbox("Also keep my raw audio with the session (optional)", key="keep_audio")
    agreed = st.checkbox("I understand and agree to be recorded for this mock interview", key="consent_box")
    if st.button("Continue", type="primary", disabled=not agreed, key="consent_continue"):
        state["keep_audio"] = keep_audio
        go(state, "setup")


def setup_step(state: InterviewState, settings: Settings, store: Store) -> None:
    """2. Name, questions (a shipped set or one's own) and how to answer; "Next" starts the session."""
    sets = {s.id: s for s in load_builtin_sets()}
    user = current_user()  # optional: anonymous practice works; a signed-in candidate's sessions are theirs
    if user is not None and user.get("role") == "candidate":
        st.session_state.setdefault("candidate_name", user.get("display_name") or user["username"])
    owner = user["username"] if user is not None and user.get("role") == "candidate" else None
    resume_offer(state, owner, settings, store)
    name = st.text_input("Your name", key="candidate_name", max_chars=200)
    choice = st.radio("Questions", ["A question set", "My own question"], horizontal=True, key="set_kind")
    questions: list[Question] = []
    role, set_id = "custom", None
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
        state.update({"session_id": session["_id"], "questions": [q.to_dict() for q in questions], "index": 0,
                      "results": [], "candidate": session["candidate"], "session_settings": session["settings"]})
        remember_session(session["_id"], settings)
        go(state, "device" if mode.startswith("Live") else "upload")


def summary_step(state: InterviewState, settings: Settings, store: Store) -> None:
    """5. The last answer's feedback, the session's figures, and the session closed (once)."""
    summary = iv.summarise(state["results"], settings.grading.band_cutoffs)
    if state.get("last_feedback"):
        show_stored_feedback(state, state["last_feedback"], store)
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
        st.session_state.pop(STATE_KEY, None)
        st.query_params.pop(iv.RESUME_PARAM, None)
        st.rerun()
