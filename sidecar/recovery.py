"""Finishing answers whose node died (``pipeline.answer_audio``): every few seconds this node looks for
orphans in MongoDB, claims each one (exactly one node wins) and feeds its stored audio through its own
sidecar, so the speech worker transcribes, grades and stores it as usual, marked as its node ended it
(``incomplete`` when the node died mid-answer)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from pipeline import answer_audio
from pipeline.records import SAMPLE_RATE, AnswerStart

log = logging.getLogger(__name__)

FEED_SECONDS = 0.5  # the live path's chunk size: the transcriber sees what it would have seen live


class SpeechInput(Protocol):
    def start_answer(self, start: AnswerStart, *, spool: bool = True) -> None: ...
    def push_audio(self, answer_id: str, t_ms: int, samples: np.ndarray) -> None: ...
    def end_answer(self, answer_id: str, ended_ms: int, status: str = "complete",
                   capture: dict[str, Any] | None = None) -> None: ...


def recover(db: Any, sidecar: SpeechInput, answer_id: str) -> bool:
    """Feed one claimed orphan's stored audio into ``sidecar``; False when nothing of it is left."""
    stored = answer_audio.load(db, answer_id)
    if stored is None:
        return False
    sidecar.start_answer(stored.start, spool=False)  # it is stored already
    step = int(FEED_SECONDS * SAMPLE_RATE)
    for i in range(0, len(stored.audio), step):
        sidecar.push_audio(answer_id, stored.t_ms + i * 1000 // SAMPLE_RATE, stored.audio[i:i + step])
    sidecar.end_answer(answer_id, stored.ended_ms, status=stored.status,
                       capture={"recovered": True, "audio_seconds": round(len(stored.audio) / SAMPLE_RATE, 2)})
    log.warning("answer %s of session %s: its node stopped; recovered %.1f s of stored audio as %s",
                answer_id, stored.start.session_id, len(stored.audio) / SAMPLE_RATE, stored.status)
    return True


class OrphanSweeper:
    """A daemon thread: every ``interval`` seconds, claim and recover the orphaned answers."""

    def __init__(self, database: Callable[[], Any | None], sidecar: SpeechInput, node: str,
                 stale_seconds: float, interval: float = 5.0) -> None:
        self._database, self._sidecar, self.node = database, sidecar, node
        self.stale_seconds, self.interval = stale_seconds, interval
        self.recovered: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orphan-sweeper", daemon=True)

    def start(self) -> OrphanSweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def sweep_once(self) -> list[str]:
        db = self._database()
        if db is None:  # database down: the orphans wait in MongoDB
            return []
        done = []
        for answer_id in answer_audio.orphaned_answers(db, self.stale_seconds):
            if answer_audio.claim(db, answer_id, self.node) and recover(db, self._sidecar, answer_id):
                done.append(answer_id)
        self.recovered += done
        return done

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep_once()
            except Exception:  # a database blip must not end the sweeper: the next round tries again
                log.exception("orphan sweep failed")
