"""Every page renders without exception (AppTest, real database)."""

from __future__ import annotations

from datetime import UTC, datetime

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


@pytest.mark.parametrize("page", PAGES)
def test_page_renders(app_env, page):
    at = _run(page)
    assert at.title[0].value
    assert at.markdown, "each page says what it is for"


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
