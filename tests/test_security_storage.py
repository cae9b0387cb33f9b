"""Issue 9, items 5 and 10: the embedded database is owner-only and authenticated; a killed
database is seen by a real ping, restarted on its data folder, and never described to users
with hosts, ports or driver text. Everything runs against real SecantusDB processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
import streamlit as st
from pymongo.errors import OperationFailure
from streamlit.testing.v1 import AppTest

from pipeline import storage
from pipeline.settings import Settings, get_settings
from pipeline.storage import EmbeddedServer
from pipeline.store import UNREACHABLE, Store
from tests.pages_support import APP
from tests.waiting import wait_until

pytestmark = pytest.mark.security

INTERNALS = ("127.0.0.1", "Topology", "localhost", "ServerSelectionTimeout", "mongodb://", "Errno")


def _modes(root: Path) -> dict[str, int]:
    """Permission bits of everything under ``root`` (root included), by relative path."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        if not p.is_symlink():
            out[str(p.relative_to(root))] = stat.S_IMODE(p.stat().st_mode)
    return out


def _frame(i: int) -> dict[str, Any]:
    return {"_id": f"f-{i}", "session_id": "s1", "answer_id": "a1", "t": 1_700_000_000_000 + i, "face": False}


@pytest.fixture
def embedded_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Settings for an app process with no MONGODB_URI: the embedded server on tmp_path/data."""
    data = tmp_path / "data"
    monkeypatch.delenv("MONGODB_URI", raising=False)
    monkeypatch.delenv("MOCKAI_MONGODB_URI", raising=False)
    monkeypatch.setenv("MOCKAI_DATA_DIR", str(data))
    monkeypatch.setenv("MOCKAI_DB_NAME", f"sec_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("MOCKAI_FLUSH_SECONDS", "0.2")
    monkeypatch.setenv("MOCKAI_RETRY_MAX_SECONDS", "0.5")
    monkeypatch.setenv("MOCKAI_DB_STATUS_CACHE_SECONDS", "0.2")
    monkeypatch.setattr(storage, "_embedded", None)  # this test's own server, not another test's
    try:
        yield data
    finally:
        if storage._embedded is not None:
            storage._embedded.stop()


# --------------------------------------------------------------------------- item 5


def test_embedded_data_journal_and_log_are_owner_only(embedded_env: Path):
    """Folders 0700, files 0600, whatever the umask; an older, world-readable folder is fixed on start."""
    data = embedded_env
    # What an older version left: a 755 data folder with a 644 journal segment in it.
    (data / "journal" / "old").mkdir(parents=True)
    os.chmod(data, 0o755)
    leftover = data / "journal" / "old" / "seg-000000000001.jsonl"
    leftover.write_text("")
    os.chmod(leftover, 0o644)
    old_umask = os.umask(0)  # the most permissive umask: modes must not depend on it
    try:
        store = Store(Settings())
        try:
            assert store.db is not None, store.error
            store.writer.insert("frames", _frame(1))
            assert store.writer.flush(30)
            server = storage._embedded
            assert server is not None and server.process is not None
            modes = _modes(data)
        finally:
            store.close()
    finally:
        os.umask(old_umask)
    for name in ("db", "journal", "journal/app"):
        assert modes[name] == 0o700, (name, oct(modes[name]))
    for name in ("db.log", "db.secret", "db.server.json", "journal/app/.lock"):
        assert modes[name] == 0o600, (name, oct(modes[name]))
    assert any(n.startswith("db/WiredTiger") for n in modes)  # the database's own files are covered too
    loose = {n: oct(m) for n, m in modes.items() if m & 0o077}
    assert not loose, f"readable or writable by others: {loose}"
    # The secret never leaves its file: not in the server info, the server's log or the repr.
    password = json.loads((data / "db.secret").read_text())["password"]
    assert len(password) >= 32
    assert password not in (data / "db.server.json").read_text()
    assert password not in (data / "db.log").read_text(errors="replace")
    assert password not in repr(server) and password not in server.safe_uri


def test_embedded_server_refuses_clients_without_credentials(tmp_path: Path):
    server = EmbeddedServer(tmp_path / "db").start()
    try:
        anonymous: pymongo.MongoClient = pymongo.MongoClient(server.safe_uri, serverSelectionTimeoutMS=5000)
        with pytest.raises(OperationFailure) as refused:
            anonymous.mockai.list_collection_names()
        assert refused.value.code == 13  # Unauthorized
        with pytest.raises(OperationFailure):
            anonymous.mockai.sessions.find_one({})
        anonymous.close()

        wrong = server.uri.replace(f":{server.password}@", ":not-the-secret@")
        intruder: pymongo.MongoClient = pymongo.MongoClient(wrong, serverSelectionTimeoutMS=5000)
        with pytest.raises(OperationFailure) as bad_password:
            intruder.mockai.list_collection_names()
        assert bad_password.value.code == 18  # AuthenticationFailed
        intruder.close()

        with pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=5000) as client:
            client.mockai.sessions.insert_one({"_id": "mine"})
            assert client.mockai.sessions.find_one({"_id": "mine"}) == {"_id": "mine"}

        # A second app process on the same data folder reuses the server, with the same secret.
        second = EmbeddedServer(tmp_path / "db").start()
        assert second.process is None and second.port == server.port
        with pymongo.MongoClient(second.uri, serverSelectionTimeoutMS=5000) as client:
            assert client.mockai.sessions.find_one({"_id": "mine"}) == {"_id": "mine"}
    finally:
        server.stop()

    # The secret file lost (the user still exists in the data): a new secret is set, data kept.
    (tmp_path / "db.secret").unlink()
    server = EmbeddedServer(tmp_path / "db").start()
    try:
        with pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=5000) as client:
            assert client.mockai.sessions.find_one({"_id": "mine"}) == {"_id": "mine"}
    finally:
        server.stop()


def test_tests_own_server_carries_credentials(mongo_uri: str):
    """conftest's ``mongo_uri`` (used by most tests) authenticates; without its credentials: refused."""
    with pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=5000) as client:
        client.sec_fixture.things.insert_one({"_id": 1})
        assert client.sec_fixture.things.count_documents({}) == 1
        client.drop_database("sec_fixture")
    if os.environ.get("MONGODB_URI"):
        return  # an external server: its own auth policy, nothing of ours to check
    parsed = pymongo.uri_parser.parse_uri(mongo_uri)
    assert parsed["username"] and parsed["password"]
    host, port = parsed["nodelist"][0]
    with pymongo.MongoClient(host, port, serverSelectionTimeoutMS=5000) as anonymous, \
            pytest.raises(OperationFailure):
        anonymous.sec_fixture.list_collection_names()


# --------------------------------------------------------------------------- item 10


def _kill(server: EmbeddedServer) -> int:
    assert server.process is not None
    pid, port = server.process.pid, server.port
    os.kill(pid, signal.SIGKILL)
    server.process.wait(30)
    return port


def test_killed_embedded_server_is_seen_restarted_and_written_to_again(embedded_env: Path):
    store = Store(Settings())
    try:
        assert store.db is not None and store.ping(), store.error
        store.writer.insert("frames", _frame(1))
        assert store.writer.flush(30)
        server = storage._embedded
        assert server is not None and server.process is not None
        old_pid = server.process.pid
        old_port = _kill(server)

        # A real ping notices (the status line no longer says "connected").
        wait_until(lambda: not store.ping(), "the ping to notice the dead server")
        assert store.error == UNREACHABLE
        assert not any(s in store.error for s in INTERNALS)
        # Writes meanwhile are acknowledged into the journal.
        store.writer.insert("frames", _frame(2))
        assert store.writer.status().pending_ops >= 1

        # The next access starts it again on its data folder, on the same (free) port.
        db = store.db
        assert db is not None, store.error
        assert store.ping() and store.error is None
        assert storage._embedded is server and server.process is not None
        assert server.process.pid != old_pid and server.port == old_port
        assert db.frames.find_one({"_id": "f-1"}) is not None  # what was stored before the kill
        assert store.writer.flush(30)  # the writer's get_db gets the restarted database
        wait_until(lambda: db.frames.find_one({"_id": "f-2"}) is not None, "the journaled write")
    finally:
        store.close()


def test_restart_on_a_taken_port_reconnects_to_the_new_one(embedded_env: Path):
    store = Store(Settings())
    squatter = socket.socket()
    try:
        assert store.db is not None, store.error
        store.writer.insert("frames", _frame(1))
        assert store.writer.flush(30)
        server = storage._embedded
        assert server is not None
        old_port = _kill(server)
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", old_port))  # someone else took the port meanwhile
        squatter.listen()
        wait_until(lambda: not store.ping(), "the ping to notice the dead server")
        store.writer.insert("frames", _frame(2))

        db = store.db
        assert db is not None, store.error
        assert server.port != old_port
        assert db.client.address == ("127.0.0.1", server.port)  # a client for the new URI
        assert db.frames.find_one({"_id": "f-1"}) is not None
        assert store.writer.flush(30)
        wait_until(lambda: db.frames.find_one({"_id": "f-2"}) is not None, "the journaled write")
    finally:
        squatter.close()
        store.close()


def test_lost_external_database_is_retried_not_written_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """MONGODB_URI: nothing of ours to restart, but a server that comes back is used again."""
    server = EmbeddedServer(tmp_path / "ext" / "db").start()
    monkeypatch.setenv("MONGODB_URI", server.uri)
    monkeypatch.setenv("MOCKAI_DATA_DIR", str(tmp_path / "app"))
    monkeypatch.setenv("MOCKAI_DB_NAME", "sec_external")
    monkeypatch.setenv("MOCKAI_FLUSH_SECONDS", "0.2")
    monkeypatch.setenv("MOCKAI_RETRY_MAX_SECONDS", "0.5")
    monkeypatch.setenv("MOCKAI_DB_STATUS_CACHE_SECONDS", "0.2")
    store = Store(Settings())
    try:
        assert store.db is not None, store.error
        port = _kill(server)
        wait_until(lambda: not store.ping(), "the ping to notice the lost server")
        assert store.db is None and store.error == UNREACHABLE
        store.writer.insert("frames", _frame(1))  # kept in the journal meanwhile
        server = EmbeddedServer(tmp_path / "ext" / "db", port=port).start()  # the operator brings it back
        wait_until(store.ping, "the ping to see the server back")
        db = store.db
        assert db is not None and store.error is None
        assert store.writer.flush(30)
        assert db.frames.find_one({"_id": "f-1"}) is not None
    finally:
        store.close()
        server.stop()


def _page_text(at: AppTest) -> str:
    """Every string the page and its sidebar render (the raw element protos, walked)."""
    out: list[str] = [str(e.value) for e in at.exception]

    def walk(node: Any) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at.main)
    walk(at.sidebar)
    return "\n".join(out)


@pytest.fixture
def external_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedServer]:
    """A server the app sees as an external MONGODB_URI (so nothing restarts it once killed)."""
    server = EmbeddedServer(tmp_path / "ext" / "db").start()
    monkeypatch.setenv("MONGODB_URI", server.uri)
    monkeypatch.setenv("MOCKAI_DB_NAME", f"sec_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("MOCKAI_DATA_DIR", str(tmp_path / "app"))
    monkeypatch.setenv("MOCKAI_SIDECAR_ENABLED", "false")
    monkeypatch.setenv("MOCKAI_DB_PING_TIMEOUT_SECONDS", "0.5")
    monkeypatch.delenv("MOCKAI_ADMIN_PASSWORD", raising=False)
    get_settings.cache_clear()
    st.cache_resource.clear()
    st.cache_data.clear()
    try:
        yield server
    finally:
        st.cache_resource.clear()  # the app's Store (and its writer) go with it
        st.cache_data.clear()
        get_settings.cache_clear()
        server.stop()


def test_sidebar_tells_the_truth_in_plain_words_when_the_database_dies(
    external_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MOCKAI_DB_STATUS_CACHE_SECONDS", "0.1")
    get_settings.cache_clear()
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Database connected" in c.value for c in at.sidebar.caption)

    _kill(external_server)
    # The next visitor (same server process, same Store). A fresh AppTest: AppTest drops the
    # entry script's sidebar on every run after the first.
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    sidebar_errors = [e.value for e in at.sidebar.error]
    assert any("Database unreachable right now" in e for e in sidebar_errors), sidebar_errors
    assert not any("Database connected" in c.value for c in at.sidebar.caption)
    _assert_no_internals(at, external_server.port)
    at.switch_page("pages/sessions.py").run()  # a coach page: needs the database to sign in
    assert not at.exception, [e.value for e in at.exception]
    assert any("unreachable" in w.value for w in at.warning), [w.value for w in at.warning]
    _assert_no_internals(at, external_server.port)


def _assert_no_internals(at: AppTest, port: int) -> None:
    text = _page_text(at)
    leaked = [s for s in (*INTERNALS, f":{port}") if s in text]
    assert not leaked, (leaked, text)


def test_page_errors_about_the_database_are_plain(external_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch):
    """While the last ping still says "up" (its cache), a page's own query fails: the page says so plainly."""
    from tests.pages_support import admin_token

    monkeypatch.setenv("MOCKAI_DB_STATUS_CACHE_SECONDS", "600")
    get_settings.cache_clear()
    token = admin_token()
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["auth_token"] = token
    at.run()
    at.switch_page("pages/sessions.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]

    _kill(external_server)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("unreachable right now" in e for e in errors), errors
    _assert_no_internals(at, external_server.port)
