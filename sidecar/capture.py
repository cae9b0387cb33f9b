"""What the WebRTC callbacks do: stamp, sample, hand over, return.

No model, no I/O, no lock, and nothing that lets go of the GIL: a callback that releases it
(a colour conversion, a large copy) waits to get it back behind every other thread of the
app process (measured: p99 13-16 ms for the bgr24 conversion alone on a loaded 2-core box,
whose own CPU time is 0.2 ms). So the callbacks stamp each frame from its media time and
enqueue it (video: one frame per 1/``analysed_fps`` s of media time, whatever rate the
browser sends, at most ``HANDOFF_MAX`` waiting; audio: every frame, never dropped); a hand-off thread of the same process converts video and copies it into the
sidecar's shared-memory ring, and resamples audio (20 ms to 16 kHz mono) into the sidecar's
buffer. Callbacks record their own cost (wall and thread CPU time) so the p99 callback time
can be reported; the hand-off thread's cost is recorded beside it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pipeline.records import SAMPLE_RATE
from sidecar.clock import TrackClock
from sidecar.resample import AudioResampler16k

log = logging.getLogger(__name__)


class SidecarInput(Protocol):
    def push_frame(self, image: np.ndarray, t_ms: int, session_id: str, answer_id: str, block: bool = False) -> bool: ...

    def push_audio(self, answer_id: str, t_ms: int, samples: np.ndarray) -> None: ...


@dataclass
class CallbackTimer:
    """Per-call cost in ms, kept in a bounded window (the callback must not grow memory).

    Wall time includes waiting for the GIL and the CPU (other threads, other processes);
    thread CPU time is the callback's own work. Both are reported.
    """

    wall: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))
    cpu: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))

    def add(self, wall_s: float, cpu_s: float) -> None:
        self.wall.append(wall_s * 1000.0)
        self.cpu.append(cpu_s * 1000.0)

    def percentile(self, q: float, cpu: bool = False) -> float | None:
        window = self.cpu if cpu else self.wall
        if not window:
            return None
        return float(np.percentile(np.fromiter(window, float), q))


@dataclass
class CaptureTarget:
    """Where captured media goes right now; None answer = preview only (nothing stored)."""

    session_id: str = ""
    answer_id: str | None = None


HANDOFF_MAX = 8  # sampled video frames waiting for the hand-off thread; beyond this new ones are dropped (counted)
HANDOFF_IDLE_S = 30.0  # the hand-off thread exits after this long without media (restarted on demand)
# A frame up to this fraction of the sampling step early is kept: media-time stamps are whole ms and
# cameras jitter, so a frame a hair before its due time must not wait for the next one (halving the rate).
SAMPLE_SLACK = 0.15  # of the step: 20 ms at 7.5 fps, under a 30 fps camera's frame period


class Capture:
    """One browser session's capture state, shared by its video and audio callbacks.

    The callbacks (aiortc's event loop thread) only stamp and enqueue; one hand-off thread
    per capture does the rest in arrival order: video frames converted and copied into the
    ring, audio resampled and appended to the sidecar's buffer. Audio is never dropped.
    """

    def __init__(self, sidecar: SidecarInput, analysed_fps: float = 7.5, max_width: int = 640,
                 max_height: int = 480) -> None:
        if not analysed_fps > 0:
            raise ValueError(f"analysed_fps must be above 0, not {analysed_fps!r}")
        self.sidecar = sidecar
        self.analysed_fps = analysed_fps
        self._step_ms = 1000.0 / analysed_fps  # media time between two sampled frames
        self._slack_ms = self._step_ms * SAMPLE_SLACK
        self._next_keep_ms: float | None = None  # media time (epoch ms) the next sampled frame is due
        self.max_width = max_width
        self.max_height = max_height
        self.target = CaptureTarget()
        self._lock = threading.Lock()  # guards target swaps only
        self.video_clock = TrackClock()
        self.audio_clock = TrackClock()
        self.resampler = AudioResampler16k()  # used by the hand-off thread only
        self.video_timer = CallbackTimer()
        self.audio_timer = CallbackTimer()
        self.copy_timer = CallbackTimer()  # the hand-off thread's work per video frame
        self.resample_timer = CallbackTimer()  # ... and per audio frame
        self._handoff: queue.SimpleQueue[tuple[str, Any, int, CaptureTarget]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._handed = self._done = 0  # items enqueued (callbacks) / dealt with (hand-off thread)
        self._video_handed = self._video_done = 0
        self.frames_seen = 0
        self.frames_sampled = 0
        self.frames_dropped = 0
        self.audio_seconds = 0.0
        self.last_frame_at: float | None = None
        self.last_audio_at: float | None = None
        self.audio_level = 0.0
        self.preview: np.ndarray | None = None

    def aim(self, session_id: str, answer_id: str | None) -> None:
        with self._lock:
            if answer_id and not answer_id.startswith("__") and answer_id != self.target.answer_id:
                # Counters and timings describe one answer each.
                self.frames_seen = self.frames_sampled = self.frames_dropped = 0
                self.audio_seconds = 0.0
                self.video_timer, self.audio_timer = CallbackTimer(), CallbackTimer()
                self.copy_timer, self.resample_timer = CallbackTimer(), CallbackTimer()
            self.target = CaptureTarget(session_id, answer_id)

    # ------------------------------------------------------------------ callbacks
    def on_video(self, frame: Any) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        self.frames_seen += 1
        self.last_frame_at = time.time()
        t_ms = self.video_clock.stamp(frame.pts, frame.time_base)
        if self._keep(t_ms):
            if self._video_handed - self._video_done >= HANDOFF_MAX:  # hand-off starved: drop, count
                self.frames_dropped += 1
            else:
                self._video_handed += 1
                self.frames_sampled += 1
                self._enqueue("video", frame, t_ms)
        self.video_timer.add(time.perf_counter() - start, time.thread_time() - cpu)
        return frame

    def _keep(self, t_ms: int) -> bool:
        """Time-based sampling: keep a frame once a sampling step of media time has passed since the
        last kept one's due time (so the kept rate is ``analysed_fps`` on average from any faster
        camera, and every frame from a slower one); a gap or a jump back starts the schedule afresh."""
        due = self._next_keep_ms
        if due is None or t_ms >= due + self._step_ms or t_ms < due - 2 * self._step_ms:
            self._next_keep_ms = t_ms + self._step_ms
            return True
        if t_ms >= due - self._slack_ms:
            self._next_keep_ms = due + self._step_ms
            return True
        return False

    def on_audio(self, frame: Any) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        self.last_audio_at = time.time()
        self._enqueue("audio", frame, self.audio_clock.stamp(frame.pts, frame.time_base))
        self.audio_timer.add(time.perf_counter() - start, time.thread_time() - cpu)
        return frame

    # streamlit-webrtc's async processing hands over every frame queued since the last call
    # only through these; the single-frame callbacks would silently skip all but the last.
    async def on_video_queued(self, frames: list[Any]) -> list[Any]:
        return [self.on_video(f) for f in frames]

    async def on_audio_queued(self, frames: list[Any]) -> list[Any]:
        return [self.on_audio(f) for f in frames]

    def _enqueue(self, kind: str, frame: Any, t_ms: int) -> None:
        self._handed += 1
        self._handoff.put((kind, frame, t_ms, self.target))  # SimpleQueue.put: never blocks
        if self._thread is None:
            self._thread = threading.Thread(target=self._hand_off, name="capture-handoff", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ hand-off thread
    def _hand_off(self) -> None:
        while True:
            try:
                kind, frame, t_ms, target = self._handoff.get(timeout=HANDOFF_IDLE_S)
            except queue.Empty:
                self._thread = None  # the next frame starts a new one
                if self._handoff.empty():
                    return
                self._thread = threading.current_thread()
                continue
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                if kind == "video":
                    self._copy_video(frame, t_ms, target)
                else:
                    self._push_audio(frame, t_ms, target)
            except Exception:  # one bad frame must not end the hand-off
                log.exception("%s frame not handed to the sidecar", kind)
                if kind == "video":
                    self.frames_dropped += 1
            timer = self.copy_timer if kind == "video" else self.resample_timer
            timer.add(time.perf_counter() - start, time.thread_time() - cpu)
            if kind == "video":
                self._video_done += 1
            self._done += 1

    def _copy_video(self, frame: Any, t_ms: int, target: CaptureTarget) -> None:
        image = frame.to_ndarray(format="bgr24")
        if image.shape[1] > self.max_width or image.shape[0] > self.max_height:
            image = _fit(image, self.max_width, self.max_height)
        self.preview = image
        if target.answer_id is not None and not self.sidecar.push_frame(
            image, t_ms, target.session_id, target.answer_id
        ):
            self.frames_dropped += 1

    def _push_audio(self, frame: Any, t_ms: int, target: CaptureTarget) -> None:
        samples = self.resampler(frame)
        if samples.size:
            self.audio_seconds += samples.size / SAMPLE_RATE
            # Device-check level: a peak meter that halves in about a second, so short sounds register.
            self.audio_level = max(float(np.abs(samples).max()), self.audio_level * 0.986)
            if target.answer_id is not None:
                self.sidecar.push_audio(target.answer_id, t_ms, samples)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything the callbacks enqueued is in the sidecar (end of an answer, tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._done >= self._handed:
                return True
            time.sleep(0.005)
        return False

    def stats(self) -> dict[str, Any]:
        return {
            "frames_seen": self.frames_seen, "frames_sampled": self.frames_sampled,
            "frames_dropped": self.frames_dropped, "audio_seconds": round(self.audio_seconds, 2),
            "video_p99_ms": self.video_timer.percentile(99), "audio_p99_ms": self.audio_timer.percentile(99),
            "video_cpu_p99_ms": self.video_timer.percentile(99, cpu=True),
            "audio_cpu_p99_ms": self.audio_timer.percentile(99, cpu=True),
            "copy_p99_ms": self.copy_timer.percentile(99), "copy_cpu_p99_ms": self.copy_timer.percentile(99, cpu=True),
            "resample_p99_ms": self.resample_timer.percentile(99),
            "resample_cpu_p99_ms": self.resample_timer.percentile(99, cpu=True),
            "video_reanchors": self.video_clock.reanchors, "audio_reanchors": self.audio_clock.reanchors,
        }


def _fit(image: np.ndarray, max_width: int, max_height: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    scale = min(max_width / w, max_height / h)
    return cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
