"""Interview page (candidate): consent, questions, device check, live answers, feedback per answer.

A straight-line script, one call per step; the steps are drawn by ui.interview_steps (consent,
setup, summary), ui.interview_upload (upload path) and ui.live (device check, live answers).
"""

from __future__ import annotations

import streamlit as st

from pipeline import interview as iv
from pipeline.settings import get_settings
from ui.interview import interview_state
from ui.interview_steps import consent_step, setup_step, summary_step
from ui.interview_upload import upload_step
from ui.live import device_step, interview_step, live_capture, start_media
from ui.navigation import run_inside_app
from ui.session import get_sidecar, get_store

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
state = interview_state()

if sidecar is None:
    st.warning("The analysis engine is switched off on this server (MOCKAI_SIDECAR_ENABLED=false): "
               "interviews cannot be recorded here. Coaches can still browse sessions.")
    st.stop()

# ---------------------------------------------------------------- 1. consent
if state["step"] == "consent":
    consent_step(state)
    st.stop()

# ---------------------------------------------------------------- 2. questions (starts the session)
if state["step"] == "setup":
    setup_step(state, settings, store)
    st.stop()

questions = iv.session_questions(state["questions"])

# ---------------------------------------------------------------- upload path
if state["step"] == "upload":
    upload_step(state, questions, settings, store)
    st.stop()

# ---------------------------------------------------------------- live media (device check + interview)
capture = live_capture(sidecar, settings)
media = start_media(state, capture, settings) if state["step"] in ("device", "interview") else None

# ---------------------------------------------------------------- 3. device check
if state["step"] == "device":
    device_step(state, capture, sidecar)
    st.stop()

# ---------------------------------------------------------------- 4. interview
if state["step"] == "interview" and media is not None:
    interview_step(state, questions, media, capture, sidecar, store)
    st.stop()

# ---------------------------------------------------------------- 5. summary (closes the session)
if state["step"] == "summary":
    summary_step(state, settings, store)
