"""Writes the journal refused (disk full, journal full), held in a worker's memory and retried in order."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _HeldWrite:
    op: str  # insert | update
    collection: str
    body: dict[str, Any]  # the document, or the fields of the update
    doc_id: str | None = None
    droppable: bool = False  # frame samples may go when the backlog overflows; answers never
    on_written: Callable[[], None] | None = None


class JournalBacklog:
    """Writes the journal refused (disk full, journal full, I/O error), held in memory and retried.

    The worker keeps analysing; nothing it produced is lost while the disk is full. Order is
    kept (an answer's insert before its update) so a held write is never overtaken: once one
    write is held, later ones queue behind it. Bounded: past ``max_items`` the oldest frame
    sample is dropped (counted in ``dropped``); an answer document is never dropped.
    """

    def __init__(self, writer: Any, max_items: int, retry_seconds: float = 1.0) -> None:
        self.writer = writer
        self.max_items = max_items
        self.retry_seconds = retry_seconds
        self.dropped = 0
        self.error: str | None = None
        self.journal_full = False
        self._held: deque[_HeldWrite] = deque()
        self._next_try = 0.0

    def __len__(self) -> int:
        return len(self._held)

    def insert(self, collection: str, doc: dict[str, Any], droppable: bool = False) -> bool:
        """True when journaled now; False when held in memory (or, for a frame, dropped)."""
        return self._submit(_HeldWrite("insert", collection, doc, droppable=droppable))

    def update(self, collection: str, doc_id: str, fields: dict[str, Any],
               on_written: Callable[[], None] | None = None) -> bool:
        """True when journaled now; False when held (``on_written`` runs once it is journaled)."""
        return self._submit(_HeldWrite("update", collection, fields, doc_id, on_written=on_written))

    def status(self) -> dict[str, Any]:
        return {"journal_backlog": len(self._held), "journal_dropped": self.dropped,
                "journal_error": self.error, "journal_full": self.journal_full}

    def retry(self, force: bool = False) -> bool:
        """Write what is held, oldest first, at most every ``retry_seconds``; True when none is left."""
        if not self._held:
            return True
        now = time.monotonic()
        if not force and now < self._next_try:
            return False
        while self._held:
            held = self._held[0]
            if not self._write(held):
                self._next_try = now + self.retry_seconds
                return False
            self._held.popleft()
            if held.on_written is not None:
                held.on_written()
        log.info("the journal takes writes again: all held writes are journaled")
        return True

    def _submit(self, w: _HeldWrite) -> bool:
        if not self._held:
            return self._write(w, hold=True)
        # Queue behind the held ones; refuse a bad document now, as a direct write would.
        from pipeline.schemas import validate, validate_fields

        if w.op == "insert":
            validate(w.collection, w.body)
        else:
            validate_fields(w.collection, w.body)
        self._hold(w)
        self.retry()
        return not self._held  # FIFO: this one, the newest, is written only once all are

    def _write(self, w: _HeldWrite, hold: bool = False) -> bool:
        from pipeline.writer import JournalError

        try:
            if w.op == "insert":
                self.writer.insert(w.collection, w.body)
            else:
                self.writer.update(w.collection, w.doc_id, w.body)
        except JournalError as exc:
            if self.error is None:
                log.error("journal refused a write, holding it in memory: %s", exc)
            self.error, self.journal_full = str(exc), exc.journal_full
            if hold:
                self._hold(w)
                self._next_try = time.monotonic() + self.retry_seconds
            return False
        self.error, self.journal_full = None, False
        return True

    def _hold(self, w: _HeldWrite) -> None:
        self._held.append(w)
        if len(self._held) > self.max_items:
            for i, held in enumerate(self._held):
                if held.droppable:
                    del self._held[i]
                    self.dropped += 1
                    if self.dropped in (1, 100) or self.dropped % 1000 == 0:
                        log.warning("journal backlog full: %d frame samples dropped so far", self.dropped)
                    break

