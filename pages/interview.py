"""Interview page (candidate): answer questions on camera and get feedback per answer."""

import streamlit as st

st.title("Interview")
st.write(
    "Answer interview questions on camera. MockAI transcribes your speech, follows your facial "
    "expression and eye contact, grades each answer against its reference and gives feedback "
    "with the evidence behind every score."
)
st.info("Live capture arrives with the interview page work; recorded sessions can be analysed with "
        "`python -m sidecar analyze` meanwhile.", icon=":material/construction:")
