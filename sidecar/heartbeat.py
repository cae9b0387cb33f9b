"""A worker's heartbeat: beaten from its own thread while the main loop makes progress."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class Heartbeat:
    """Beats from its own thread while the worker's main loop is alive and not stuck.

    The main loop calls ``progress()`` once per iteration. A decode or grade that runs long
    on a starved CPU is not a hang: the thread keeps beating for up to ``stuck_seconds`` of
    no progress, so the supervisor does not kill a busy worker (and replay all its audio,
    making it busier still). A stopped or dead process stops beating at once; a main loop
    stuck longer than ``stuck_seconds`` stops the beat too and gets the worker restarted.
    """

    def __init__(
        self, value: Any, stuck_seconds: float, every: float = 0.25, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.value = value
        self.stuck_seconds = stuck_seconds
        self.every = every
        self._clock = clock  # a test moves its own clock instead of sleeping past stuck_seconds
        self._last = clock()
        threading.Thread(target=self._beat, name="heartbeat", daemon=True).start()

    def progress(self) -> None:
        self._last = self._clock()
        self.value.value = time.time()

    def _beat(self) -> None:
        while True:
            if self._clock() - self._last < self.stuck_seconds:
                self.value.value = time.time()
            time.sleep(self.every)

