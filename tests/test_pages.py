"""Every page renders without exception (AppTest, real database)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pymongo
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from pipeline.settings import get_settings
from tests.pages_support import APP, admin_token, open_page

PAGES = ["pages/interview.py", "pages/sessions.py", "pages/report.py", "pages/research.py", "pages/accounts.py"]


@pytest.fixture
def app_env(mongo_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MOCKAI_DB_NAME", "test_pages")
    monkeypatch.setenv("MOCKAI_DATA_DIR", str(tmp_path))
    # Page layout only: the analysis engine has its own tests (test_sidecar, the e2e tests).
    monkeypatch.setenv("MOCKAI_SIDECAR_ENABLED", "false")
    get_settings.cache_clear()
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()
    get_settings.cache_clear()



def _run(page: str, **query) -> AppTest:
    return open_page(page, admin_token(), timeout=30, **query)


def _labels(elements: Iterable[Any]) -> list[str]:
    return [e.label for e in elements]


def _values(elements: Iterable[Any]) -> list[str]:
    return [str(e.value) for e in elements]


def _says(elements: Iterable[Any], text: str) -> bool:
    return any(text in v for v in _values(elements))


# What a signed-in admin sees on each page of an empty database with the analysis engine off.
def _interview(at: AppTest) -> None:
    assert _values(at.title) == ["Interview"]
    assert _says(at.markdown, "Answer interview questions on camera")
    # No engine, no recording: the page says so instead of offering the consent step.
    assert _says(at.warning, "analysis engine is switched off on this server")
    assert not at.checkbox and not at.button


def _sessions(at: AppTest) -> None:
    assert _values(at.title) == ["Sessions"]
    assert _says(at.markdown, "Every interview session: candidate, date, role")
    assert _labels(at.tabs) == ["Sessions", "Progress", "Compare two sessions"]
    assert _says(at.info, "No sessions yet. Record one on the Interview page.")
    assert _says(at.info, "The list needs at least two sessions to compare.")
    assert _labels(at.main.text_input) == ["Search candidate or role"]  # the sidebar holds the what-if panel
    assert {"Candidate", "Role", "Grade band", "Sort by", "Session to delete"} <= set(_labels(at.selectbox))
    assert at.button(key="delete_button").disabled, "nothing to delete, nothing confirmed"
    assert at.checkbox(key="delete_sure").disabled


def _report(at: AppTest) -> None:
    assert _values(at.title) == ["Session report"]
    assert _says(at.markdown, "One session's answers on one time axis")
    assert _says(at.info, "No sessions yet. Record one on the Interview page, or pick one on the Sessions page.")
    assert not at.selectbox, "no session to choose"


def _research(at: AppTest) -> None:
    assert _values(at.title) == ["Research"]
    assert _says(at.markdown, "Thresholds that drive scoring")
    assert _labels(at.tabs) == ["Thresholds and profiles", "Calibration"]
    assert _says(at.info, "**0** stored sessions")
    assert {"Preview effect", "Save as profile", "Reset to settings"} <= set(_labels(at.button))
    assert {"grade_weight_similarity", "pace_low_wpm", "pace_high_wpm", "frame_sample_every"} <= set(
        _labels(at.number_input))
    assert at.selectbox(key="profile_pick").disabled and at.button(key="profile_load").disabled, "no profile saved yet"
    assert _says(at.caption, "Save a profile first.")


def _accounts(at: AppTest) -> None:
    assert _values(at.title) == ["Accounts"]
    assert _says(at.markdown, "Coaches and researchers see the sessions of the candidates assigned to them")
    assert _values(at.subheader) == ["New account", "Reset a password", "All accounts"]
    assert {"Create account", "Reset password"} <= set(_labels(at.button))
    assert at.radio[0].label == "Role" and at.radio[0].options == ["candidate", "coach", "researcher", "admin"]
    accounts = at.dataframe[0].value
    assert accounts["username"].tolist() == ["admin"] and accounts["role"].tolist() == ["admin"]


PAGE_CHECKS = {"pages/interview.py": _interview, "pages/sessions.py": _sessions, "pages/report.py": _report,
               "pages/research.py": _research, "pages/accounts.py": _accounts}
assert set(PAGE_CHECKS) == set(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_page_shows_what_a_user_needs(app_env, page):
    at = _run(page)
    assert not at.exception and not at.error
    PAGE_CHECKS[page](at)


def test_sessions_page_lists_sessions(app_env, db, mongo_uri):

    client = pymongo.MongoClient(mongo_uri)
    client.test_pages.sessions.insert_one(
        {"_id": "s-1", "candidate": "Grace Hopper", "role": "software", "started_at": datetime.now(UTC)}
    )
    try:
        at = _run("pages/sessions.py")
        assert "Grace Hopper" in at.dataframe[0].value.to_string()
        at = _run("pages/report.py", session="s-1")
        assert any("Grace Hopper" in s.value for s in at.subheader)
    finally:
        client.drop_database("test_pages")


def test_database_down_is_said_on_the_page(tmp_path, monkeypatch):
    from pipeline.storage import free_port

    monkeypatch.setenv("MONGODB_URI", f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=200")
    monkeypatch.setenv("MOCKAI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MOCKAI_SIDECAR_ENABLED", "false")
    get_settings.cache_clear()
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(APP, default_timeout=30).run()
        assert not at.exception
        assert any("Database unreachable" in e.value for e in at.error)
        at.switch_page("pages/sessions.py").run()
        assert not at.exception
        assert any("unreachable" in w.value for w in at.warning)
    finally:
        st.cache_resource.clear()
        get_settings.cache_clear()


# --------------------------------------------------------------------------- the one navigation workaround


class _RerunCalledError(Exception):
    pass


def _fake_rerun() -> None:
    raise _RerunCalledError


def test_deep_link_first_request_is_rerun_inside_app_navigation(monkeypatch):
    """ui.navigation.run_inside_app: in Streamlit's pages/-folder mode (a deep link as the server's
    first request) it switches that mode off and reruns, so app.py's navigation runs the page;
    once st.navigation has run (the mode is off) it does nothing."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.pages_manager import PagesManager

    from ui import navigation

    monkeypatch.setattr(Runtime, "exists", staticmethod(lambda: True))
    monkeypatch.setattr(Runtime, "instance", staticmethod(lambda: object.__new__(Runtime)))
    monkeypatch.setattr(navigation.st, "rerun", _fake_rerun)
    monkeypatch.setattr(PagesManager, "uses_pages_directory", True)
    with pytest.raises(_RerunCalledError):
        navigation.run_inside_app()
    assert PagesManager.uses_pages_directory is False
    navigation.run_inside_app()  # the mode is off now: the page just runs
    assert PagesManager.uses_pages_directory is False


def test_navigation_workaround_leaves_apptest_alone(monkeypatch):
    """Without the real server runtime (AppTest, bare mode) the mode is left as it is."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.pages_manager import PagesManager

    from ui import navigation

    monkeypatch.setattr(Runtime, "exists", staticmethod(lambda: False))
    monkeypatch.setattr(navigation.st, "rerun", _fake_rerun)
    monkeypatch.setattr(PagesManager, "uses_pages_directory", True)
    navigation.run_inside_app()
    assert PagesManager.uses_pages_directory is True
