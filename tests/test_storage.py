"""Embedded server lifecycle and index set-up, on a real SecantusDB process."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import storage
from pipeline.settings import Settings
from pipeline.storage import INDEXES, EmbeddedServer, StorageError, connect, ensure_indexes, ping


def test_embedded_server_starts_is_reused_and_stops(tmp_path: Path):
    first = EmbeddedServer(tmp_path / "db").start()
    try:
        assert ping(first.uri)
        second = EmbeddedServer(tmp_path / "db").start()  # another app process on the same folder
        assert second.port == first.port and second.process is None
    finally:
        first.stop()
    assert not ping(first.uri, 300)
    assert not (tmp_path / "db.server.json").exists()


def test_data_survives_restart(tmp_path: Path):
    server = EmbeddedServer(tmp_path / "db").start()
    from pymongo import MongoClient

    MongoClient(server.uri).mockai.sessions.insert_one({"_id": "keep"})
    server.stop()
    server = EmbeddedServer(tmp_path / "db").start()
    try:
        assert MongoClient(server.uri).mockai.sessions.find_one({"_id": "keep"})
    finally:
        server.stop()


def test_connect_with_uri_creates_every_index(mongo_uri: str, monkeypatch: pytest.MonkeyPatch):
    settings = Settings(MONGODB_URI=mongo_uri, db_name="test_indexes")
    db = connect(settings)
    try:
        for name, models in INDEXES.items():
            have = set(db[name].index_information())
            assert {m.document["name"] for m in models} <= have, name
        ensure_indexes(db)  # idempotent
    finally:
        db.client.drop_database("test_indexes")


def test_connect_without_uri_starts_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MONGODB_URI", raising=False)
    monkeypatch.setattr(storage, "_embedded", None)
    db = connect(Settings(data_dir=tmp_path))
    try:
        assert db.command("ping")["ok"] == 1
        assert (tmp_path / "db").is_dir()
    finally:
        storage._embedded.stop()


def test_unreachable_uri_is_a_clear_error():
    port = storage.free_port()
    with pytest.raises(StorageError, match="database unreachable"):
        connect(Settings(MONGODB_URI=f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=300"))
