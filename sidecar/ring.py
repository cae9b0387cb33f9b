"""A shared-memory ring of sampled video frames: fixed slots, no pickling of pixels.

Producers (WebRTC callbacks, one per browser session, or a file reader) ``put`` a
stamped frame; the emotion worker ``get``s it from another process. A full ring drops
the oldest frame and counts the drop (live capture must never wait), unless the
producer asks to block (offline analysis of a file, where nothing may be dropped).

The lock is held only for one memcpy (~0.1 ms for 640x480). A producer never waits
long on it: if a worker died holding it, ``put`` gives up after ``lock_timeout`` and
counts a drop, and the supervisor replaces the lock when it restarts the worker.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

META = np.dtype(
    [
        ("t_ms", "i8"),
        ("seq", "i8"),
        ("height", "i4"),
        ("width", "i4"),
        ("session", "S40"),
        ("answer", "S40"),
    ]
)
# header: write_seq, read_seq, dropped, put_total
_WRITE, _READ, _DROPPED, _TOTAL = range(4)


@dataclass(frozen=True)
class RingFrame:
    t_ms: int
    seq: int
    session_id: str
    answer_id: str
    image: np.ndarray  # BGR uint8, owned by the reader


class FrameRing:
    def __init__(self, slots: int, max_height: int = 480, max_width: int = 640, ctx: Any = None) -> None:
        ctx = ctx or mp.get_context("spawn")
        self.slots = slots
        self.max_height = max_height
        self.max_width = max_width
        self.slot_bytes = max_height * max_width * 3
        self._pixels_shm = shared_memory.SharedMemory(create=True, size=slots * self.slot_bytes)
        self._meta_shm = shared_memory.SharedMemory(create=True, size=slots * META.itemsize + 4 * 8)
        self.lock = ctx.Lock()
        self._owner = True
        self._attach()
        self._header[:] = 0

    # Pickled into the worker process: only names and the lock travel, never pixels.
    def __getstate__(self) -> dict[str, Any]:
        return {
            "slots": self.slots, "max_height": self.max_height, "max_width": self.max_width,
            "pixels": self._pixels_shm.name, "meta": self._meta_shm.name, "lock": self.lock,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.slots = state["slots"]
        self.max_height = state["max_height"]
        self.max_width = state["max_width"]
        self.slot_bytes = self.max_height * self.max_width * 3
        self._pixels_shm = shared_memory.SharedMemory(name=state["pixels"])
        self._meta_shm = shared_memory.SharedMemory(name=state["meta"])
        self.lock = state["lock"]
        self._owner = False
        self._attach()

    def _attach(self) -> None:
        self._pixels = np.ndarray((self.slots, self.slot_bytes), np.uint8, self._pixels_shm.buf)
        self._header = np.ndarray((4,), np.int64, self._meta_shm.buf)
        self._meta = np.ndarray((self.slots,), META, self._meta_shm.buf, offset=32)

    def replace_lock(self, ctx: Any = None) -> None:
        """A worker died, maybe holding the lock: give the ring a fresh one (owner only)."""
        self.lock = (ctx or mp.get_context("spawn")).Lock()

    # ------------------------------------------------------------------ producer
    def put(
        self, image: np.ndarray, t_ms: int, session_id: str, answer_id: str,
        block: bool = False, lock_timeout: float = 0.05, block_timeout: float = 60.0,
    ) -> bool:
        """Copy one BGR frame into the ring. Returns False if it had to be dropped.

        ``block`` waits for room (at most ``block_timeout``: a reader gone for that long is
        not coming back, and the caller must not hang).
        """
        deadline = time.monotonic() + block_timeout
        h, w = image.shape[:2]
        if h > self.max_height or w > self.max_width or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"frame {image.shape} does not fit a {self.max_width}x{self.max_height}x3 slot")
        while True:
            if not self.lock.acquire(timeout=lock_timeout):
                self._header[_DROPPED] += 1  # racy without the lock, but only a counter
                return False
            try:
                write, read = int(self._header[_WRITE]), int(self._header[_READ])
                full = write - read >= self.slots
                if not (full and block):
                    if full:
                        self._header[_READ] = read + 1  # drop the oldest sampled frame
                        self._header[_DROPPED] += 1
                    slot = write % self.slots
                    self._pixels[slot, : h * w * 3] = np.ascontiguousarray(image, dtype=np.uint8).reshape(-1)
                    m = self._meta[slot]
                    m["t_ms"], m["seq"], m["height"], m["width"] = t_ms, write, h, w
                    m["session"], m["answer"] = session_id.encode()[:40], answer_id.encode()[:40]
                    self._header[_WRITE] = write + 1
                    self._header[_TOTAL] += 1
                    return True
            finally:
                self.lock.release()
            # Blocking producer (offline file): let the reader catch up.
            if time.monotonic() > deadline:
                self._header[_DROPPED] += 1
                return False
            time.sleep(0.002)

    # ------------------------------------------------------------------ consumer
    def get(self, timeout: float = 0.0) -> RingFrame | None:
        """The oldest frame not yet read, copied out; None if none arrived within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                write, read = int(self._header[_WRITE]), int(self._header[_READ])
                if read < write:
                    slot = read % self.slots
                    m = self._meta[slot].copy()
                    h, w = int(m["height"]), int(m["width"])
                    image = self._pixels[slot, : h * w * 3].reshape(h, w, 3).copy()
                    self._header[_READ] = read + 1
                    return RingFrame(
                        int(m["t_ms"]), int(m["seq"]), m["session"].decode(), m["answer"].decode(), image
                    )
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.003)

    def stats(self) -> dict[str, int]:
        h = self._header
        return {
            "depth": int(h[_WRITE] - h[_READ]), "dropped": int(h[_DROPPED]), "frames_in": int(h[_TOTAL]),
            "slots": self.slots,
        }

    def close(self) -> None:
        self._pixels = self._header = self._meta = None  # type: ignore[assignment]
        self._pixels_shm.close()
        self._meta_shm.close()
        if self._owner:
            self._pixels_shm.unlink()
            self._meta_shm.unlink()
