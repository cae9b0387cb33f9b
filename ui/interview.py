"""The Interview page's session glue: its state in ``st.session_state``, moving between steps,
the resume link and offer, and the feedback on the last answer read from the stored answer."""

from __future__ import annotations

import logging
from typing import Any, TypedDict

import streamlit as st
from pymongo.errors import PyMongoError

from pipeline import interview as iv
from pipeline.safe_text import md
from pipeline.settings import Settings
from pipeline.store import Store

log = logging.getLogger(__name__)

STATE_KEY = "interview"  # st.session_state key of the page's state (tests read it)

RESUME_UNAVAILABLE = ("Resume unavailable right now: the database cannot be reached, so an unfinished session "
                      "cannot be looked up. You can still start a new session: it is recorded and stored once the "
                      "database is back.")


class LiveAnswer(TypedDict):
    """The answer being recorded live."""

    answer_id: str
    started_ms: int


class Feedback(TypedDict, total=False):
    """What the page keeps of the last answer to show its feedback (the card reads the stored answer)."""

    answer_id: str
    question: str
    error: str | None
    feedback_s: float
    frames_stored: bool


class InterviewState(TypedDict, total=False):
    """The page's state: ``step`` is one of consent, setup, upload, device, interview, summary."""

    step: str
    keep_audio: bool
    session_id: str
    questions: list[dict[str, Any]]
    index: int
    results: list[dict[str, Any]]
    candidate: str
    session_settings: dict[str, Any] | None
    upload_try: int
    upload_error: str
    media_started_at: float
    answer: LiveAnswer | None
    last_feedback: Feedback
    closed: bool


def interview_state() -> InterviewState:
    """This browser session's interview state, at the consent step the first time."""
    state: InterviewState = st.session_state.setdefault(STATE_KEY, {"step": "consent"})
    return state


def go(state: InterviewState, step: str) -> None:
    """Move to ``step`` and run the page again."""
    state["step"] = step
    st.rerun()


def remember_session(session_id: str, settings: Settings) -> None:
    """Put this session's resume token in the URL: a reload of this tab can resume it, another browser cannot."""
    try:
        st.query_params[iv.RESUME_PARAM] = iv.resume_token(session_id, settings)
    except (OSError, ValueError) as exc:  # no key file (read-only disk): recording goes on without resume
        log.warning("no resume token for session %s: %s", session_id, exc)


def resume_offer(state: InterviewState, candidate_user: str | None, settings: Settings, store: Store) -> None:
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
        log.warning("resume lookup failed: %s", exc)
        st.info(RESUME_UNAVAILABLE, icon=":material/cloud_off:")
        return
    total = len(unfinished["questions"])
    st.info(f"You have an unfinished session from {unfinished['started_at']:%Y-%m-%d %H:%M} "
            f"({len(done)} of {total} answers complete). What was captured is kept; an interrupted "
            "answer is marked incomplete and you can answer that question again.")
    if st.button("Resume that session", key="resume"):
        state.update({"session_id": unfinished["_id"], "questions": unfinished["questions"],
                      "index": min(index, total - 1), "results": done, "candidate": unfinished["candidate"],
                      "session_settings": unfinished.get("settings"),
                      "keep_audio": bool((unfinished.get("consent") or {}).get("keep_audio"))})
        if unfinished.get("source") == "upload" and done:  # its last answer may have finished while away
            last = done[-1]
            state["last_feedback"] = {"answer_id": last["_id"], "frames_stored": True,
                                      "question": unfinished["questions"][last["index"]]["question"]}
        remember_session(unfinished["_id"], settings)
        go(state, iv.resume_step(unfinished, index))


def show_stored_feedback(state: InterviewState, feedback: Feedback, store: Store) -> None:
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
