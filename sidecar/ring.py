"""A shared-memory ring of sampled video frames: fixed slots, no pickling of pixels.

Producers (WebRTC callbacks, one per browser session, or a file reader; all in the
supervisor's process) ``put`` a stamped frame; the emotion worker ``get``s it from
another process. A full ring overwrites the oldest frame and counts the drop (live
capture must never wait), unless the producer asks to block (offline analysis of a
file, where nothing may be dropped).

No lock is shared with the worker: a worker that is descheduled (it runs at a lower
priority) or dies mid-copy must never hold up a WebRTC callback. Each slot carries the
sequence number of the frame in it, set to -1 while a producer writes it (a seqlock):
the reader checks it before and after copying, and a frame overwritten meanwhile is
counted as dropped instead of being returned torn. ``write`` is only advanced by
producers (serialised by an in-process lock), ``read`` only by the reader.
"""

from __future__ import annotations

import threading
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
        ("flags", "i4"),
    ]
)
COLLECT = 1  # send this frame's sample back to the app (offline analysis of a file)
FLUSH = 2  # no pixels: a marker; the reader flushes what it analysed of this answer and says so
# header: next seq to write (producers), next seq to read (reader), frames the reader found
# overwritten, frames put, frames a blocking producer gave up on
_WRITE, _READ, _DROPPED, _TOTAL, _PUT_DROPPED = range(5)
_HEADER = 8  # int64s reserved for the header
_WRITING = -1
POLL_MAX_S = 0.02  # the reader's longest wait between looks at an empty ring


@dataclass(frozen=True)
class RingFrame:
    t_ms: int
    seq: int
    session_id: str
    answer_id: str
    image: np.ndarray  # BGR uint8, owned by the reader
    flags: int = 0

    @property
    def collect(self) -> bool:
        return bool(self.flags & COLLECT)

    @property
    def flush_marker(self) -> bool:
        return bool(self.flags & FLUSH)


class FrameRing:
    def __init__(self, slots: int, max_height: int = 480, max_width: int = 640) -> None:
        self.slots = slots
        self.max_height = max_height
        self.max_width = max_width
        self.slot_bytes = max_height * max_width * 3
        self._pixels_shm = shared_memory.SharedMemory(create=True, size=slots * self.slot_bytes)
        self._meta_shm = shared_memory.SharedMemory(create=True, size=slots * META.itemsize + _HEADER * 8)
        self._owner = True
        self._attach()
        self._header[:] = 0
        self._meta["seq"] = _WRITING

    # Pickled into the worker process: only names travel, never pixels.
    def __getstate__(self) -> dict[str, Any]:
        return {
            "slots": self.slots, "max_height": self.max_height, "max_width": self.max_width,
            "pixels": self._pixels_shm.name, "meta": self._meta_shm.name,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.slots = state["slots"]
        self.max_height = state["max_height"]
        self.max_width = state["max_width"]
        self.slot_bytes = self.max_height * self.max_width * 3
        self._pixels_shm = shared_memory.SharedMemory(name=state["pixels"])
        self._meta_shm = shared_memory.SharedMemory(name=state["meta"])
        self._owner = False
        self._attach()

    def _attach(self) -> None:
        self._producers = threading.Lock()  # producers of this process, one at a time (never the reader)
        self._pixels = np.ndarray((self.slots, self.slot_bytes), np.uint8, self._pixels_shm.buf)
        self._header = np.ndarray((_HEADER,), np.int64, self._meta_shm.buf)
        self._meta = np.ndarray((self.slots,), META, self._meta_shm.buf, offset=_HEADER * 8)

    # ------------------------------------------------------------------ producer
    def put(
        self, image: np.ndarray, t_ms: int, session_id: str, answer_id: str,
        block: bool = False, block_timeout: float = 60.0, flags: int = 0,
    ) -> bool:
        """Copy one BGR frame into the ring. Returns False if it had to be dropped.

        Never waits for the reader unless ``block`` (then at most ``block_timeout``: a reader
        gone for that long is not coming back, and the caller must not hang). ``flags``:
        ``COLLECT`` and/or ``FLUSH`` (see ``put_flush``).
        """
        h, w = image.shape[:2]
        if h > self.max_height or w > self.max_width or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"frame {image.shape} does not fit a {self.max_width}x{self.max_height}x3 slot")
        if block:
            deadline = time.monotonic() + block_timeout
            while int(self._header[_WRITE]) - int(self._header[_READ]) >= self.slots:
                if time.monotonic() > deadline:
                    if not flags & FLUSH:  # a marker that could not be queued dropped no frame
                        self._header[_PUT_DROPPED] += 1
                    return False
                time.sleep(0.002)  # let the reader catch up
        pixels = np.ascontiguousarray(image, dtype=np.uint8).reshape(-1)
        with self._producers:
            write = int(self._header[_WRITE])
            slot = write % self.slots
            m = self._meta[slot:slot + 1]  # a view: field writes land in shared memory
            m["seq"] = _WRITING  # a reader copying this slot now will see it changed
            self._pixels[slot, : h * w * 3] = pixels
            m["t_ms"], m["height"], m["width"] = t_ms, h, w
            m["session"], m["answer"] = session_id.encode()[:40], answer_id.encode()[:40]
            m["flags"] = flags
            m["seq"] = write
            self._header[_WRITE] = write + 1
            if not flags & FLUSH:  # a marker is not a frame
                self._header[_TOTAL] += 1
        return True

    # ------------------------------------------------------------------ consumer
    def get(self, timeout: float = 0.0) -> RingFrame | None:
        """The oldest frame not yet read, copied out; None if none arrived within ``timeout``.

        One reader only (the emotion worker)."""
        deadline = time.monotonic() + timeout
        pause = 0.002
        while True:
            read, write = int(self._header[_READ]), int(self._header[_WRITE])
            if read < write:
                if write - read > self.slots:  # overwritten before we got to them
                    self._header[_DROPPED] += write - self.slots - read
                    read = write - self.slots
                slot = read % self.slots
                if int(self._meta[slot]["seq"]) == read:
                    m = self._meta[slot].copy()
                    h, w = int(m["height"]), int(m["width"])
                    image = self._pixels[slot, : h * w * 3].reshape(h, w, 3).copy()
                    if int(self._meta[slot]["seq"]) == read:  # not overwritten while we copied
                        self._header[_READ] = read + 1
                        return RingFrame(
                            int(m["t_ms"]), read, m["session"].decode(), m["answer"].decode(), image,
                            int(m["flags"]),
                        )
                self._header[_DROPPED] += 1  # overwritten under us: skip it
                self._header[_READ] = read + 1
                continue
            now = time.monotonic()
            if now >= deadline:
                return None
            # Poll (no lock or semaphore shared with the producers), backing off while nothing comes:
            # a frame waits at most POLL_MAX_S; a fixed 3 ms poll woke the idle worker 333 times a second.
            time.sleep(min(pause, deadline - now))
            pause = min(2 * pause, POLL_MAX_S)

    def put_flush(self, session_id: str, answer_id: str, timeout: float = 5.0) -> bool:
        """Queue a flush marker behind every frame put so far (the ring is FIFO): when the reader
        gets it, all of this answer's earlier frames have been analysed. Waits (at most ``timeout``)
        for a free slot instead of overwriting a frame; False when it could not be queued."""
        return self.put(np.zeros((1, 1, 3), np.uint8), 0, session_id, answer_id, block=True,
                        block_timeout=timeout, flags=FLUSH)

    def stats(self) -> dict[str, int]:
        h = self._header
        write, read = int(h[_WRITE]), int(h[_READ])
        unread = write - read
        return {
            "depth": min(unread, self.slots),
            "dropped": int(h[_DROPPED]) + int(h[_PUT_DROPPED]) + max(0, unread - self.slots),
            "frames_in": int(h[_TOTAL]),
            "slots": self.slots,
        }

    def close(self) -> None:
        self._pixels = self._header = self._meta = None  # type: ignore[assignment]
        self._pixels_shm.close()
        self._meta_shm.close()
        if self._owner:
            self._pixels_shm.unlink()
            self._meta_shm.unlink()
