"""The app's handle on storage: database (when reachable) plus the batched writer.

Opening never fails: with the database down, ``error`` says why, writes go to the
journal and reach the database once it is back.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from pymongo.database import Database

from pipeline.settings import Settings
from pipeline.storage import StorageError, connect
from pipeline.writer import BatchedWriter, WriterOptions

log = logging.getLogger(__name__)


@dataclass
class Store:
    settings: Settings
    writer_name: str = "app"
    error: str | None = None
    _db: Database | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    writer: BatchedWriter = field(init=False)

    def __post_init__(self) -> None:
        self.writer = BatchedWriter(self.get_db, WriterOptions.from_settings(self.settings, self.writer_name))
        try:
            self.get_db()
        except StorageError as exc:
            log.warning("%s", exc)

    def get_db(self) -> Database:
        """The database, connecting (and starting the embedded server) on demand."""
        with self._lock:
            if self._db is not None:
                return self._db
            try:
                self._db = connect(self.settings)
                self.error = None
            except StorageError as exc:
                self.error = str(exc)
                raise
            return self._db

    @property
    def db(self) -> Database | None:
        try:
            return self.get_db()
        except StorageError:
            return None

    def close(self) -> None:
        self.writer.close()
