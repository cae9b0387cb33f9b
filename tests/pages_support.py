"""Shared by the AppTest page tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from pipeline import auth
from pipeline.settings import get_settings
from pipeline.storage import ensure_indexes

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def page_database(mongo_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str) -> Iterator[Any]:
    """A fresh database the app's pages will use (a coach-only server: no analysis workers);
    yield it from a fixture. Dropped afterwards, with Streamlit's caches and the settings."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MOCKAI_DB_NAME", name)
    monkeypatch.setenv("MOCKAI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MOCKAI_SIDECAR_ENABLED", "false")
    monkeypatch.delenv("MOCKAI_ADMIN_PASSWORD", raising=False)
    get_settings.cache_clear()
    st.cache_resource.clear()
    st.cache_data.clear()
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_uri, tz_aware=True)
    db = client[name]
    ensure_indexes(db)
    try:
        yield db
    finally:
        client.drop_database(name)
        client.close()
        st.cache_resource.clear()
        st.cache_data.clear()
        get_settings.cache_clear()


def open_page(page: str, token: str | None = None, timeout: float = 60, **query: str) -> AppTest:
    """app.py in AppTest, signed in with ``token`` if given, switched to ``page`` with ``query``."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    if token:
        at.session_state["auth_token"] = token
    at.run()
    at.switch_page(page)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def admin_token() -> str:
    """A sign-in token for an admin of the test database (the coach pages need a signed-in user)."""
    settings = get_settings()
    with pymongo.MongoClient(settings.storage.mongodb_uri, tz_aware=True) as client:
        db = client[settings.storage.db_name]
        user = auth.get_user(db, "admin") or auth.create_user(db, "admin", "test-admin-pass", "admin")
        return auth.start_login(db, user, settings)
