"""Session report page (coach): aligned timeline and per-answer feedback for one session."""

import streamlit as st

from pages.common import get_store
from pipeline.queries import get_session, list_answers

st.title("Session report")
st.write("One session's answers on one time axis: emotion, eye contact, words, pace and grade evidence.")
store = get_store()
session_id = st.query_params.get("session")
if store.db is None:
    st.warning("The report cannot be shown while the database is unreachable.")
    st.stop()
if not session_id:
    st.info("Pick a session on the Sessions page to see its report.")
    st.stop()
session = get_session(store.db, session_id)
if session is None:
    st.error("No session with that id.")
    st.stop()
st.subheader(f"{session['candidate']} · {session.get('role', '')}")
for answer in list_answers(store.db, session_id):
    with st.container(border=True):
        st.markdown(f"**Q{answer['index'] + 1}. {answer['question']}**")
        st.write(answer.get("transcript") or "_No transcript stored._")
