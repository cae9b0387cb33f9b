"""MockAI: Streamlit entry point. Navigation, shared status, warm resources."""

from __future__ import annotations

import streamlit as st

from pipeline.settings import get_settings, settings_problem
from ui.capacity import show_live_sessions, start_health_endpoint
from ui.jobs import job_client
from ui.session import get_sidecar, get_store, show_account
from ui.status import show_sidecar_status, show_storage_status

st.set_page_config(page_title="MockAI", page_icon=":material/record_voice_over:", layout="wide")
if (problem := settings_problem()) is not None:  # e.g. MOCKAI_ADMIN_PASSWORD too short: refuse, never run open
    st.error(problem, icon=":material/block:")
    st.stop()

PAGES = {
    "Candidate": [st.Page("pages/interview.py", title="Interview", icon=":material/videocam:", default=True)],
    "Coach": [
        st.Page("pages/sessions.py", title="Sessions", icon=":material/table_rows:"),
        st.Page("pages/report.py", title="Session report", icon=":material/timeline:"),
        st.Page("pages/batch.py", title="Batch", icon=":material/queue:"),
    ],
    "Research": [st.Page("pages/research.py", title="Research", icon=":material/tune:")],
    "Admin": [st.Page("pages/accounts.py", title="Accounts", icon=":material/manage_accounts:")],
}

page = st.navigation(PAGES)
store = get_store()
sidecar = get_sidecar()  # started with the server so models are warm before the first answer
start_health_endpoint(sidecar)  # GET /health for a load balancer, once per server process
if get_settings().jobs.embedded_workers:
    job_client()  # embedded Redis + worker started with the server, so its models are warm for the first upload
with st.sidebar:
    show_account()
    show_storage_status(store)
    show_sidecar_status(sidecar)
    show_live_sessions(sidecar)
page.run()
