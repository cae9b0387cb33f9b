"""Research page: every threshold the pipeline uses, with its meaning."""

import streamlit as st

from pipeline.settings import get_settings, settings_table

st.title("Research")
st.write("Thresholds that drive scoring. Tune them, save them as profiles, and re-score stored sessions.")
st.dataframe(settings_table(get_settings()), hide_index=True, width="stretch")
