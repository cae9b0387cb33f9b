"""Session report page (coach): aligned timeline and per-answer feedback for one session.

Layout only: the figure comes from pipeline.timeline, the card from pipeline.card (drawn by ui.cards).
"""

from dataclasses import replace
from typing import Any

import streamlit as st
from pymongo.errors import PyMongoError

from pipeline.auth import can_view_session, session_access_filter
from pipeline.card import answer_card_view, session_header, session_label
from pipeline.export import resolve_share
from pipeline.queries import find_session, list_answer_frames, list_report_answers, list_sessions
from pipeline.report import ReportOptions
from pipeline.safe_text import md
from pipeline.settings import get_settings
from pipeline.timeline import answer_timeline
from pipeline.whatif import whatif_session
from ui.cards import card_options, show_card
from ui.navigation import run_inside_app
from ui.report_actions import show_session_actions
from ui.session import error_text, get_store, require_user
from ui.thresholds import threshold_panel

run_inside_app()

FINAL = ("complete", "incomplete", "failed")


@st.cache_data(ttl=600, max_entries=32, show_spinner="Loading frames…")
def final_frames(db_name: str, session_id: str, answer_id: str, version: str, _db: Any) -> list[dict[str, Any]]:
    # A finished answer's frames never change: rereading ~27,000 of them on every toggle is waste.
    return list_answer_frames(_db, session_id, answer_id)


st.title("Session report")
st.write("One session's answers on one time axis: emotion, eye contact, words, pace and grade evidence.")
store = get_store()
db = store.db
if db is None:
    st.warning("The report cannot be shown while the database is unreachable.")
    st.stop()

# A read-only share link (?share=<token>) opens its one session without signing in.
share_token = st.query_params.get("share")
shared_id: str | None = None
if share_token:
    try:
        shared_id = resolve_share(db, share_token)
    except PyMongoError as exc:
        st.error(f"Could not check the share link: {error_text(exc)}")
        st.stop()
    if shared_id is None:
        st.error("This share link is unknown or has expired. Ask whoever shared it for a new one.",
                 icon=":material/link_off:")
        st.stop()
    st.caption(":material/link: Shared read-only view of one session.")
    user = None
    session_id = shared_id
else:
    user = require_user(("admin", "coach", "researcher", "candidate"))

    requested = st.query_params.get("session")
    try:
        recent = list_sessions(db, limit=50, access=session_access_filter(user, db))
    except PyMongoError as exc:
        st.error(f"Could not read sessions from the database: {error_text(exc)}")
        st.stop()
    labels = {r["id"]: session_label(r) for r in recent}
    choices = list(labels)
    if requested and requested not in labels:
        choices.insert(0, requested)  # a link to an older (or unknown) session still opens it
    if not choices:
        st.info("No sessions yet. Record one on the Interview page, or pick one on the Sessions page.")
        st.stop()
    session_id = st.selectbox("Session", choices, index=choices.index(requested) if requested in choices else 0,
                              format_func=lambda i: labels.get(i, f"{i} (not among the 50 most recent)"))
    if session_id != requested:
        st.query_params["session"] = session_id  # the address bar is a shareable link to this report

try:
    session = find_session(db, session_id)
    if session is not None and shared_id is None and not can_view_session(user, session, db):
        st.error(f"You are not allowed to see session {md(repr(session_id))}.", icon=":material/lock:")
        st.stop()  # nothing of it is read or shown
    answers = list_report_answers(db, session_id) if session is not None else []
except PyMongoError as exc:
    st.error(f"Could not read the session from the database: {error_text(exc)}")
    st.stop()
if session is None:
    st.error(f"No session with id {md(repr(session_id))}.")
    st.stop()

# Researchers and admins: the sidebar what-if re-scores this report in memory (nothing is written).
whatif = threshold_panel(user, get_settings()) if shared_id is None else None
result = whatif_session(session, answers, whatif) if whatif is not None else None
if result is not None:
    session, answers = result.session, result.answers
    st.warning("**What-if, not saved:** " + (md(result.change.text()) if result.change.changed else
               "grade, band and key points as stored; pause marks, fillers, pace and advice follow the "
               "sidebar's thresholds"), icon=":material/science:")
header = session_header(session, answers)
st.subheader(f"{md(header['candidate'])} · {md(header['role'])}", anchor=False)
st.caption(md(" · ".join(x for x in (header["date"], header["status"], ", ".join(map(str, header["flags"]))) if x)))
if isinstance(session.get("profile"), dict):  # re-scored on the Research page
    st.caption(f"Scored with profile {md(session['profile'].get('name'))} v{md(session['profile'].get('version'))}")
cols = st.columns(3)
cols[0].metric(f"Overall grade · {md(header['band'])}" if header["band"] else "Overall grade", header["grade_text"])
cols[1].metric("Answers graded", f"{header['graded_answers']} of {header['answers']}")

options = (card_options(session.get("settings")) if whatif is None
           else ReportOptions.from_settings(whatif, session.get("settings")))
show_emotion = st.toggle(
    "Show emotion", value=options.emotion_enabled, disabled=not options.emotion_enabled,
    help="Emotion estimates, with their confidence." if options.emotion_enabled
    else "Emotion was switched off for this session or in the settings.",
)
options = replace(options, emotion_enabled=show_emotion)

if not answers:
    st.info("No answers stored for this session yet.")
for n, answer in enumerate(answers):
    answer_id = str(answer.get("_id"))
    with st.container(border=True):
        st.markdown(f"**Q{int(answer.get('index') or 0) + 1}.** {md(answer.get('question', ''))}")
        if result is not None and result.answer_changes[n].changed:
            st.caption(f":material/science: What-if: {md(result.answer_changes[n].text())}")
        try:
            if answer.get("status") in FINAL:
                version = f"{answer.get('status')}:{answer.get('ended_ms')}"
                frames = final_frames(db.name, session_id, answer_id, version, db)
            else:  # still recording: always fresh
                frames = list_answer_frames(db, session_id, answer_id)
        except PyMongoError as exc:
            st.error(f"Could not read this answer's frames: {error_text(exc)}")
            frames = []
        st.plotly_chart(answer_timeline(answer, frames, options), width="stretch", key=f"timeline-{answer_id}",
                        config={"displaylogo": False})
        show_card(answer_card_view(answer, frames, options))


if shared_id is None:  # a shared read-only view offers none of these
    show_session_actions(db, store, session, session_id, user, options)
