"""Sessions page (coach): browse every recorded session."""

import streamlit as st

from pages.common import get_store
from pipeline.queries import list_sessions

st.title("Sessions")
st.write("Every interview session: candidate, date, role, answers, overall grade and flags.")
store = get_store()
if store.db is None:
    st.warning("Sessions cannot be listed while the database is unreachable.")
    st.stop()
rows = list_sessions(store.db, limit=50)
if not rows:
    st.info("No sessions yet. Record one on the Interview page.")
else:
    st.dataframe(rows, hide_index=True, width="stretch")
