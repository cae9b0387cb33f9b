"""Timestamped audio of one answer kept until it is acknowledged as stored (``AudioBacklog``),
and its picklable hand-over form (``PendingAudio``) for a fresh worker after a crash.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from pipeline.records import SAMPLE_RATE
from sidecar.asr_weights import AsrError


@dataclass
class PendingAudio:
    """Audio not yet acknowledged as stored, with the clock it was captured on.

    Picklable, so it can cross a multiprocessing queue. ``anchors`` are
    ``(sample index since answer start, epoch ms of that sample)``.
    """

    answer_t0_ms: int
    start_sample: int
    samples: np.ndarray
    anchors: list[tuple[int, int]] = field(default_factory=list)
    rate: int = SAMPLE_RATE

    @property
    def start_ms(self) -> float:
        return _map_ms(self.anchors, self.start_sample, self.rate) if self.anchors else float(self.answer_t0_ms)

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def _map_ms(anchors: list[tuple[int, int]], sample: int, rate: int) -> float:
    """Epoch ms of an absolute sample index: the last anchor at or before it, plus elapsed samples."""
    i = max(0, bisect.bisect_right(anchors, sample, key=lambda a: a[0]) - 1)  # anchors are sorted by sample
    idx, ms = anchors[i]
    return ms + (sample - idx) * 1000.0 / rate


class AudioBacklog:
    """Timestamped 16 kHz audio of one answer, kept from the last acknowledgement on.

    No model inside: the supervisor process keeps one beside each worker (it appends
    every chunk it sends and acks what the worker's words cover), so when a worker
    dies its unacknowledged audio is still there for ``StreamingTranscriber.resume``.
    ``StreamingTranscriber`` uses the same class for its own buffer.
    """

    gap_ms = 40  # a capture stamp this much later than the samples imply is a real gap

    def __init__(self, rate: int = SAMPLE_RATE) -> None:
        self.rate = rate
        self.answer_t0_ms: int | None = None
        self.anchors: list[tuple[int, int]] = []
        self._buf = np.zeros(rate * 30, dtype=np.float32)
        self.start = 0  # absolute sample index of the oldest sample kept
        self.end = 0  # absolute index one past the newest sample
        self.acked = 0  # the caller has stored everything before this sample

    @classmethod
    def from_pending(cls, pending: PendingAudio) -> AudioBacklog:
        backlog = cls(pending.rate)
        backlog.answer_t0_ms = pending.answer_t0_ms
        backlog.anchors = list(pending.anchors) or [(pending.start_sample, int(pending.start_ms))]
        backlog.start = backlog.end = backlog.acked = pending.start_sample
        backlog._write(np.asarray(pending.samples, dtype=np.float32))
        return backlog

    def append(self, chunk: np.ndarray, t0_ms: int) -> None:
        """Add samples whose first one was captured at epoch ``t0_ms``."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim > 1 and sorted(chunk.shape)[-2] > 1:
            raise AsrError(f"mono 16 kHz audio expected, got an array of shape {chunk.shape}")
        chunk = chunk.reshape(-1)
        if chunk.size == 0:
            return
        if self.answer_t0_ms is None:
            self.answer_t0_ms = int(t0_ms)
            self.anchors = [(self.end, int(t0_ms))]
        elif t0_ms > self.time_ms(self.end) + self.gap_ms:
            # Re-anchor only on a real gap (dropped packets); capture jitter or a clock that
            # runs backwards must not move words around or make time go backwards.
            self.anchors.append((self.end, int(t0_ms)))
        self._write(chunk)

    def _write(self, chunk: np.ndarray) -> None:
        used = self.end - self.start
        need = used + len(chunk)
        if need > len(self._buf):
            grown = np.zeros(max(need, 2 * len(self._buf)), dtype=np.float32)
            grown[:used] = self._buf[:used]
            self._buf = grown
        self._buf[used:need] = chunk
        self.end += len(chunk)

    def slice(self, a: int, b: int) -> np.ndarray:
        """Samples ``[a, b)`` by absolute index (a view: copy it to keep it)."""
        return self._buf[max(a, self.start) - self.start : b - self.start]

    def time_ms(self, sample: int) -> float:
        return _map_ms(self.anchors, sample, self.rate)

    def sample_at_ms(self, ms: float) -> int:
        best = self.anchors[0]
        for anchor in self.anchors:
            if anchor[1] <= ms:
                best = anchor
        return int(best[0] + round((ms - best[1]) * self.rate / 1000.0))

    def ack(self, upto_ms: float) -> None:
        """Everything captured before ``upto_ms`` is stored: its audio may go."""
        if self.answer_t0_ms is not None:
            self.ack_sample(self.sample_at_ms(upto_ms))

    def ack_sample(self, sample: int) -> None:
        self.acked = min(self.end, max(self.acked, sample))
        keep_from = self.acked
        if keep_from - self.start > self.rate:  # compact in whole seconds, not every frame
            n = self.end - keep_from
            self._buf[:n] = self._buf[keep_from - self.start : self.end - self.start]
            self.anchors = [(keep_from, int(round(self.time_ms(keep_from))))] + [
                a for a in self.anchors if a[0] > keep_from
            ]
            self.start = keep_from

    def pending(self) -> PendingAudio:
        """A copy of the unacknowledged audio, for a fresh worker."""
        if self.answer_t0_ms is None:
            return PendingAudio(answer_t0_ms=0, start_sample=0, samples=np.zeros(0, np.float32), rate=self.rate)
        start = self.acked
        anchors = [(start, int(round(self.time_ms(start))))] + [a for a in self.anchors if a[0] > start]
        return PendingAudio(
            answer_t0_ms=self.answer_t0_ms,
            start_sample=start,
            samples=self.slice(start, self.end).copy(),
            anchors=anchors,
            rate=self.rate,
        )
