"""MongoDB storage on plain pymongo.

``MONGODB_URI`` set: use it. Unset: start (or reuse) an embedded SecantusDB
wire-protocol server as a child process on a free loopback port, data under
``<data_dir>/db``. One code path either way: callers get a pymongo ``Database``.

The embedded server is owner-only: its folders are 0700, its files 0600, and it
runs with SCRAM-SHA-256 authentication (``--auth``) for one generated user whose
secret sits in ``<data_dir>/db.secret`` (0600). Other local users can neither read
the files nor talk to the port without that secret (the server itself: pipeline.embedded_db).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

import pymongo
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.database import Database
from pymongo.errors import PyMongoError

from pipeline.embedded_db import (
    DIR_MODE,
    FILE_MODE,
    Client,
    EmbeddedServer,
    StorageError,
    free_port,
    ping,
    port_free,
    secure_dir,
    secure_file,
    secure_tree,
)
from pipeline.settings import Settings

# Importers (writer, journal, tests, benches) take the embedded server's names from here too.
__all__ = [
    "COLLECTIONS", "DELETED_SESSIONS", "DIR_MODE", "FILE_MODE", "INDEXES", "NOT_SESSION_DATA", "Client", "Db",
    "EmbeddedServer", "StorageError", "client_for", "connect", "ensure_indexes", "free_port", "ping",
    "port_free", "resolve_uri", "secure_dir", "secure_file", "secure_tree",
]

log = logging.getLogger(__name__)

# The app's database handle: documents are plain dicts.
Db = Database[dict[str, Any]]

COLLECTIONS = ("sessions", "answers", "answer_scores", "frames", "profiles", "questions", "users")

# Every query the pages run has an index here (DESIGN.md: "Indexes on every query").
# Tombstones of deleted sessions, the session id as _id (pipeline.writer): a journaled write for
# one of them, replayed later by any writer, is dropped. Kept for good: an id is never reused.
DELETED_SESSIONS = "deleted_sessions"
# Collections that are not per-session data: deleting a session never touches them.
NOT_SESSION_DATA = frozenset({"sessions", "users", "logins", "profiles", "questions", DELETED_SESSIONS})

# How long an open answer's stored audio is kept (crash recovery only: it is not shown anywhere).
AUDIO_KEEP_SECONDS = 24 * 3600

INDEXES: dict[str, list[IndexModel]] = {
    "sessions": [
        IndexModel([("started_at", DESCENDING)], name="by_started"),
        IndexModel([("candidate", ASCENDING), ("started_at", DESCENDING)], name="by_candidate"),
        IndexModel([("role", ASCENDING), ("started_at", DESCENDING)], name="by_role"),
        IndexModel([("coach", ASCENDING), ("started_at", DESCENDING)], name="by_coach"),
        IndexModel([("band", ASCENDING), ("started_at", DESCENDING)], name="by_band"),
        IndexModel([("candidate_user", ASCENDING), ("started_at", DESCENDING)], name="by_candidate_user"),
        # The Sessions page's sorts, each ending on _id so pages never overlap (pipeline.queries.session_sort).
        IndexModel([("started_at", DESCENDING), ("_id", ASCENDING)], name="list_by_date"),
        IndexModel([("grade", DESCENDING), ("started_at", DESCENDING), ("_id", ASCENDING)], name="list_by_grade"),
        IndexModel([("candidate", ASCENDING), ("started_at", DESCENDING), ("_id", ASCENDING)],
                   name="list_by_candidate"),
    ],
    "answers": [
        IndexModel([("session_id", ASCENDING), ("index", ASCENDING)], name="by_session"),
        IndexModel([("status", ASCENDING)], name="by_status"),
    ],
    "frames": [
        IndexModel([("session_id", ASCENDING), ("answer_id", ASCENDING), ("t", ASCENDING)], name="by_answer_time"),
    ],
    # Open answers' start, audio and end, for the node that finishes an answer whose node died
    # (pipeline.answer_audio); the server removes them answer_audio_keep_hours after they were written.
    "answer_audio": [
        IndexModel([("answer_id", ASCENDING), ("written_at", DESCENDING)], name="by_answer"),
        IndexModel([("kind", ASCENDING), ("written_at", ASCENDING)], name="by_kind"),
        IndexModel([("session_id", ASCENDING)], name="by_session"),
        IndexModel([("expires_at", ASCENDING)], name="expires_at", expireAfterSeconds=0),
    ],
    "answer_claims": [IndexModel([("claimed_at", ASCENDING)], name="expires", expireAfterSeconds=AUDIO_KEEP_SECONDS)],
    # Background jobs (pipeline.jobs): the Batch view's lists, a user's queue bound, the reaper's scans,
    # the upload step finding its job again after a reload.
    "jobs": [
        IndexModel([("created_at", DESCENDING)], name="by_created"),
        IndexModel([("owner", ASCENDING), ("status", ASCENDING)], name="by_owner_status"),
        IndexModel([("status", ASCENDING), ("heartbeat_at", ASCENDING)], name="by_status_heartbeat"),
        IndexModel([("session_id", ASCENDING), ("index", ASCENDING), ("created_at", DESCENDING)],
                   name="by_answer"),
        IndexModel([("batch_id", ASCENDING), ("created_at", DESCENDING)], name="by_batch"),
    ],
    # Re-scored grades, one small document per answer (pipeline.queries.ANSWER_SCORES).
    "answer_scores": [IndexModel([("session_id", ASCENDING)], name="by_session")],
    DELETED_SESSIONS: [IndexModel([("deleted_at", DESCENDING)], name="by_deleted_at")],
    "profiles": [
        IndexModel([("name", ASCENDING), ("version", DESCENDING)], name="by_name_version", unique=True),
    ],
    "questions": [IndexModel([("set_id", ASCENDING), ("order", ASCENDING)], name="by_set")],
    "users": [
        IndexModel([("username", ASCENDING)], name="by_username", unique=True),
        IndexModel([("role", ASCENDING)], name="by_role"),
        IndexModel([("coach", ASCENDING), ("role", ASCENDING)], name="by_coach"),
    ],
    # Read-only share links of one session (pipeline.export): token hash as _id; the server
    # removes expired ones (resolve_share also checks the time: TTL pruning is lazy).
    "shares": [
        IndexModel([("expires_at", ASCENDING)], name="expires", expireAfterSeconds=0),
        IndexModel([("session_id", ASCENDING)], name="by_session"),
    ],
    # Failed sign-ins per (client, username) and per client (pipeline.auth back-off), by hash
    # as _id; the server forgets them after expires_at (verify_password also checks the time).
    "login_failures": [IndexModel([("expires_at", ASCENDING)], name="expires", expireAfterSeconds=0)],
    # Sign-in tokens (by their SHA-256 as _id); expired ones are removed by the server.
    "logins": [
        IndexModel([("expires_at", ASCENDING)], name="expires", expireAfterSeconds=0),
        IndexModel([("username", ASCENDING)], name="by_username"),
    ],
}


_embedded: EmbeddedServer | None = None
_embedded_lock = threading.Lock()


def resolve_uri(settings: Settings) -> str:
    """The URI to use: ``MONGODB_URI`` if set, else the embedded server.

    The embedded server is started on demand, and started again on its data folder
    when it died (same port if it is still free, so existing clients reconnect).
    """
    global _embedded
    if settings.storage.mongodb_uri:
        return settings.storage.mongodb_uri
    storage_path = settings.storage.data_dir / "db"
    with _embedded_lock:
        if _embedded is None or _embedded.storage_path != storage_path:
            _embedded = EmbeddedServer(storage_path)
        if not _embedded.alive():
            if _embedded.port:
                log.warning("embedded database on port %s is not answering: starting it again", _embedded.port)
            _embedded.start()
        return _embedded.uri


def client_for(uri: str, timeout_ms: int = 3000) -> Client:
    return pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, tz_aware=True, appname="mockai"
    )


def ensure_indexes(db: Db) -> None:
    _migrate_audio_expiry(db)
    for name, indexes in INDEXES.items():
        db[name].create_indexes(indexes)


def _migrate_audio_expiry(db: Db) -> None:
    """Stored audio used to expire a day after ``written_at`` (index "expires"); now each document says
    when in ``expires_at`` (None = kept). Older documents get their day, then the old index goes."""
    audio = db["answer_audio"]
    if "expires" not in audio.index_information():
        return
    ops = [UpdateOne({"_id": d["_id"]}, {"$set": {"expires_at": d["written_at"] + timedelta(seconds=AUDIO_KEEP_SECONDS)}})
           for d in audio.find({"expires_at": {"$exists": False}}, {"written_at": 1})]
    if ops:
        audio.bulk_write(ops, ordered=False)
    audio.drop_index("expires")


def connect(settings: Settings, uri: str | None = None) -> Db:
    """Connect (to ``uri``, else ``resolve_uri``), create indexes, return the database.

    Raises StorageError when unreachable; its message has the details, for the log only.
    """
    client: Client | None = None
    try:
        client = client_for(uri or resolve_uri(settings))
        db = client[settings.storage.db_name]
        db.command("ping")
        ensure_indexes(db)
        return db
    except PyMongoError as exc:
        if client is not None:
            client.close()  # a failed attempt must not leave its monitor threads behind
        raise StorageError(f"database unreachable: {exc}") from exc
