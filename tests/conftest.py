"""Shared fixtures: a real Mongo-protocol server started by the tests themselves.

With ``MONGODB_URI`` set, every storage test runs against that server instead
(a real MongoDB), each test in a database of its own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest

from pipeline.storage import EmbeddedServer

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
ARTIFACTS = ROOT / "artifacts"

_server_note: list[str] = []

# In-process app runs (AppTest) start no health endpoint: a fixed port would clash between runs.
# Apps started as servers (tests/browser.py running_app) get a free one each.
os.environ.setdefault("MOCKAI_HEALTH_PORT", "0")
# An app started by a test runs no background-job worker (each would load every model beside the live
# analysis the test measures); the tests of the queue ask for one (MOCKAI_EMBEDDED_WORKERS=1).
os.environ.setdefault("MOCKAI_EMBEDDED_WORKERS", "0")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"test material missing: {SHARED_DATA} (CI puts shared/ beside the clone)"
    return SHARED_DATA


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        _server_note.append(f"storage tests ran against MONGODB_URI ({_build_info(uri)})")
        yield uri
        return
    server = EmbeddedServer(tmp_path_factory.mktemp("secantus") / "db").start()
    # server.uri carries the generated credentials (the embedded server runs with --auth): never print it.
    _server_note.append(f"storage tests ran against {_build_info(server.uri)} started by the tests at "
                        f"{server.safe_uri} (SCRAM auth on)")
    yield server.uri
    server.stop()


def _build_info(uri: str) -> str:
    client: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        info = client.admin.command("buildInfo")
        if "secantusVersion" in info:
            return f"SecantusDB {info['secantusVersion']} (wire version {info.get('version')})"
        return f"MongoDB {info.get('version', '?')}"
    finally:
        client.close()


@pytest.fixture
def db(mongo_uri: str) -> Iterator[pymongo.database.Database]:
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield client[name]
    client.drop_database(name)
    client.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for note in _server_note:
        terminalreporter.write_line(note)
