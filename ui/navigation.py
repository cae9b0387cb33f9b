"""Keeps every page inside app.py's navigation (the one workaround of a Streamlit behaviour)."""

from __future__ import annotations

import streamlit as st


def run_inside_app() -> None:
    """Call first on every page: a page must always run inside app.py's navigation.

    Streamlit behaviour worked around (streamlit 1.67; no public option turns it off, see
    streamlit/streamlit#9624): because a ``pages/`` folder sits next to app.py, Streamlit starts in
    its old folder-based multipage mode (``PagesManager.uses_pages_directory``, private) and keeps it
    until some session has run app.py (``st.navigation`` turns it off). A deep link as the first request after a start (``/report?session=...``) would then
    run the page alone: no sign-in shell, no sidebar status, every ``pages/*.py`` listed.
    Turning that mode off and rerunning runs app.py, which opens the same page (same URL path
    and query string); that first request carries no widget event a rerun could lose.
    ``AppTest`` is left alone: it resets the mode before every run and drives pages itself.
    """
    from streamlit.runtime import Runtime
    from streamlit.runtime.pages_manager import PagesManager

    if not Runtime.exists() or type(Runtime.instance()) is not Runtime:
        return
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
