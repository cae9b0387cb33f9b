"""Batch page (coach, admin): submit a batch of recordings as background jobs, follow and manage the queue,
re-analyse stored answers with the current models. Widgets in ui/batch.py."""

from __future__ import annotations

import streamlit as st

from pipeline.settings import get_settings
from ui.batch import queue_section, reanalyse_section, submit_section
from ui.jobs import job_client
from ui.navigation import run_inside_app
from ui.session import get_store, require_user

run_inside_app()

st.title("Batch")
st.write("Analyse many recorded answers in the background: each recording is one job, run by a worker "
         "(here or on another machine), retried when a worker dies, and stored as a session of its own.")
db = get_store().db
if db is None:
    st.warning("The batch queue needs the database, which is unreachable right now.", icon=":material/cloud_off:")
    st.stop()
user = require_user(("coach", "admin"))
settings = get_settings()
client = job_client()

tab_submit, tab_queue, tab_reanalyse = st.tabs(["Submit", "Queue", "Re-analyse"])
with tab_submit:
    submit_section(db, user, client, settings)
with tab_queue:
    queue_section(db, user, client, settings)
with tab_reanalyse:
    reanalyse_section(db, user, client, settings)
