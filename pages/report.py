"""Session report page (coach): aligned timeline and per-answer feedback for one session.

Layout only: the figure comes from pipeline.timeline, the card from pipeline.card (drawn by ui.cards).
"""

from dataclasses import replace
from typing import Any

import streamlit as st
from pymongo.errors import PyMongoError

from pipeline.auth import can_view_session, session_access_filter
from pipeline.card import answer_card_view, session_header, session_label
from pipeline.export import (
    SHARE_MAX_DAYS,
    create_share_link,
    delete_session,
    export_filename,
    list_shares,
    load_session,
    resolve_share,
    revoke_shares,
    samples_csv,
    samples_json,
    session_html,
)
from pipeline.queries import find_session, list_answer_frames, list_report_answers, list_sessions
from pipeline.safe_text import md
from pipeline.timeline import answer_timeline
from ui.cards import card_options, show_card
from ui.navigation import run_inside_app
from ui.session import error_text, get_store, require_user

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
    user = require_user(("admin", "coach", "candidate"))

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

header = session_header(session, answers)
st.subheader(f"{md(header['candidate'])} · {md(header['role'])}", anchor=False)
st.caption(md(" · ".join(x for x in (header["date"], header["status"], ", ".join(map(str, header["flags"]))) if x)))
if isinstance(session.get("profile"), dict):  # re-scored on the Research page
    st.caption(f"Scored with profile {md(session['profile'].get('name'))} v{md(session['profile'].get('version'))}")
cols = st.columns(3)
cols[0].metric(f"Overall grade · {md(header['band'])}" if header["band"] else "Overall grade", header["grade_text"])
cols[1].metric("Answers graded", f"{header['graded_answers']} of {header['answers']}")

options = card_options(session.get("settings"))
show_emotion = st.toggle(
    "Show emotion", value=options.emotion_enabled, disabled=not options.emotion_enabled,
    help="Emotion estimates, with their confidence." if options.emotion_enabled
    else "Emotion was switched off for this session or in the settings.",
)
options = replace(options, emotion_enabled=show_emotion)

if not answers:
    st.info("No answers stored for this session yet.")
for answer in answers:
    answer_id = str(answer.get("_id"))
    with st.container(border=True):
        st.markdown(f"**Q{int(answer.get('index') or 0) + 1}.** {md(answer.get('question', ''))}")
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


# --------------------------------------------------------------------------- export, share, delete
if shared_id is None:
    st.divider()
    st.subheader("Export, share, delete", anchor=False)

    def _export(render: Any) -> Any:  # read when a download is clicked, not on every rerun
        def build() -> str:
            data = load_session(db, session_id)
            return render(data) if data is not None else "This session no longer exists.\n"
        return build

    _html = _export(lambda data: session_html(data, options))
    _csv = _export(samples_csv)
    _json = _export(samples_json)

    cols = st.columns(3)
    cols[0].download_button("Report (HTML, opens offline)", _html, file_name=export_filename(session, "html"),
                            mime="text/html", key="export_html", on_click="ignore", icon=":material/download:")
    cols[1].download_button("Samples (CSV)", _csv, file_name=export_filename(session, "csv"), mime="text/csv",
                            key="export_csv", on_click="ignore", icon=":material/table:")
    cols[2].download_button("Samples (JSON)", _json, file_name=export_filename(session, "json"),
                            mime="application/json", key="export_json", on_click="ignore", icon=":material/data_object:")

    with st.expander("Share a read-only link", icon=":material/link:"):
        days = st.number_input("Valid for (days)", 1, SHARE_MAX_DAYS, 7, key="share_days")
        if st.button("Create link", key="share_create"):
            try:
                token = create_share_link(db, session_id, days, created_by=(user or {}).get("username"))
                st.session_state["share_link"] = (session_id, f"report?share={token}")
            except (PyMongoError, ValueError) as exc:
                st.error(f"Could not create the link: {error_text(exc)}")
        made = st.session_state.get("share_link")
        if made and made[0] == session_id:
            st.caption("Anyone with this link sees this session's report, read-only, until it expires "
                       "(append it to this app's address):")
            st.code(made[1], language=None)
        live = list_shares(db, session_id)
        if live:
            st.caption(f"{len(live)} live link(s); the last expires {max(s['expires_at'] for s in live):%Y-%m-%d}.")
            if st.button("Revoke every link to this session", key="share_revoke"):
                revoke_shares(db, session_id)
                st.session_state.pop("share_link", None)
                st.rerun()

    with st.expander("Delete this session", icon=":material/delete:"):
        st.write("Deletes the session with every answer, transcript, frame sample and share link of it. "
                 "This cannot be undone.")
        sure = st.checkbox("Yes, delete it and everything recorded in it", key="report_delete_sure")
        if st.button("Delete session", type="primary", key="report_delete", disabled=not sure):
            try:
                gone = delete_session(db, session_id, store.writer)  # journaled: ordered with every other write
            except PyMongoError as exc:
                st.error(f"Could not delete the session: {error_text(exc)}")
            else:
                st.cache_data.clear()
                st.query_params.clear()
                st.success("Deleted: " + ", ".join(f"{n} {k}" for k, n in gone.items()) + "." if gone is not None
                           else "Deleting: the database is slow to answer; the delete is kept in the journal and "
                           "finishes once it does.")
                st.stop()
