"""The app's handle on storage: database (when reachable) plus the batched writer.

Opening never fails: with the database down, ``error`` says so in plain words (the
details go to the log), writes go to the journal and reach the database once it is
back. Reachability is a real ping, reused for ``db_status_cache_seconds``; a dead
embedded server is started again on its data folder by the next access, and an
external ``MONGODB_URI`` is simply pinged again (pymongo reconnects by itself).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field

import pymongo
from pymongo.errors import ConnectionFailure, PyMongoError

from pipeline.settings import Settings
from pipeline.storage import Db, StorageError, connect, resolve_uri
from pipeline.writer import BatchedWriter, WriterOptions

log = logging.getLogger(__name__)

UNREACHABLE = ("The database is unreachable right now; recordings are kept in the local journal "
               "and saved once it is back. Please try again in a moment.")
REFUSED = "The database could not complete this request right now; the details are in the server log."


def db_error_message(exc: BaseException) -> str:
    """A plain sentence for a database exception a user may see (no hosts, ports or driver text)."""
    return UNREACHABLE if isinstance(exc, ConnectionFailure) else REFUSED


@dataclass
class Store:
    settings: Settings
    writer_name: str = "app"
    error: str | None = None
    _db: Db | None = None
    _uri: str | None = field(default=None, repr=False)  # may carry the embedded server's secret
    _checked_at: float = float("-inf")  # monotonic time of the last real ping
    _ok: bool = False
    _heal_failed_at: float = float("-inf")  # monotonic time of the last failed (re)connect
    _down_logged: bool = False
    _lock: threading.RLock = field(default_factory=threading.RLock)
    writer: BatchedWriter = field(init=False)

    def __post_init__(self) -> None:
        self.writer = BatchedWriter(self.get_db, WriterOptions.from_settings(self.settings, self.writer_name))
        with contextlib.suppress(StorageError):  # logged by get_db; the pages say it in plain words
            self.get_db()

    def ping(self) -> bool:
        """Whether the database answers a ping now (a result at most ``db_status_cache_seconds`` old).

        Only checks: it never starts or restarts anything (``get_db`` does).
        """
        with self._lock:
            if time.monotonic() - self._checked_at < self.settings.storage.db_status_cache_seconds:
                return self._ok
            ok = False
            if self._db is not None:
                try:
                    with pymongo.timeout(self.settings.storage.db_ping_timeout_seconds):
                        self._db.command("ping")
                    ok = True
                except PyMongoError as exc:
                    self._log_down("database ping failed: %s", exc)
            self._set_state_locked(ok)
            return ok

    def get_db(self) -> Db:
        """The database, connecting (and starting or restarting the embedded server) on demand.

        Raises StorageError with a plain message when the database is unreachable.
        """
        with self._lock:
            if self.ping() and self._db is not None:
                return self._db
            if time.monotonic() - self._heal_failed_at < self.settings.storage.db_status_cache_seconds:
                raise StorageError(UNREACHABLE)  # a reconnect failed a moment ago: don't hammer it
            try:
                self._heal_locked()
            except StorageError as exc:
                self._log_down("database unreachable: %s", exc.__cause__ or exc)
                self._set_state_locked(False)
                self._heal_failed_at = time.monotonic()
                raise StorageError(UNREACHABLE) from exc
            self._set_state_locked(True)
            assert self._db is not None
            return self._db

    def _heal_locked(self) -> None:
        """Connect for the first time, or after the server went away."""
        if self._db is not None and self.settings.storage.mongodb_uri:
            # An external server: the driver reconnects on its own and the ping that just
            # failed is tried again after db_status_cache_seconds; nothing to restart here.
            raise StorageError("external database did not answer the ping")
        # First connect, or embedded: start it again on its data folder when it died (same port if free).
        try:
            uri = resolve_uri(self.settings)
        except PyMongoError as exc:
            raise StorageError(f"database unreachable: {exc}") from exc
        if self._db is not None:
            if uri == self._uri:
                self._ping_after_restart_locked()
                return
            log.warning("embedded database restarted on a new port: reconnecting")
            old, self._db = self._db, None
            old.client.close()
        self._db = connect(self.settings, uri)
        self._uri = uri

    def _ping_after_restart_locked(self) -> None:
        # The first use of the old client may hit a pooled connection to the dead
        # process (the pool is then cleared): one more try before calling it down.
        assert self._db is not None
        for attempt in range(2):
            try:
                with pymongo.timeout(max(3.0, self.settings.storage.db_ping_timeout_seconds)):
                    self._db.command("ping")
                return
            except PyMongoError as exc:
                if attempt:
                    raise StorageError(f"database unreachable: {exc}") from exc

    def _log_down(self, message: str, detail: object) -> None:
        # The details (hosts, ports, driver text) belong in the log: a warning once per outage.
        log.log(logging.DEBUG if self._down_logged else logging.WARNING, message, detail)
        self._down_logged = True

    def _set_state_locked(self, ok: bool) -> None:
        if ok and self._down_logged:
            log.warning("database reachable again")
            self._down_logged = False
        self._ok = ok
        self._checked_at = time.monotonic()
        self.error = None if ok else UNREACHABLE

    @property
    def db(self) -> Db | None:
        try:
            return self.get_db()
        except StorageError:
            return None

    def close(self) -> None:
        self.writer.close()
        with self._lock:
            if self._db is not None:
                self._db.client.close()
