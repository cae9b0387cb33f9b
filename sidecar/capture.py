"""What the WebRTC callbacks do: stamp, sample, copy into the sidecar, return.

No model, no I/O, no long lock: the video callback converts and copies only every
Nth frame (the others cost a counter), the audio callback resamples 20 ms to 16 kHz
mono and appends it to the sidecar's buffer. Both record their own cost so the p99
callback time can be reported.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pipeline.clock import TrackClock
from pipeline.media import AudioResampler16k


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


class Capture:
    """One browser session's capture state, shared by its video and audio callbacks."""

    def __init__(self, sidecar: SidecarInput, sample_every: int = 4, max_width: int = 640, max_height: int = 480) -> None:
        self.sidecar = sidecar
        self.sample_every = max(1, sample_every)
        self.max_width = max_width
        self.max_height = max_height
        self.target = CaptureTarget()
        self._lock = threading.Lock()  # guards target swaps only
        self.video_clock = TrackClock()
        self.audio_clock = TrackClock()
        self.resampler = AudioResampler16k()
        self.video_timer = CallbackTimer()
        self.audio_timer = CallbackTimer()
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
            self.target = CaptureTarget(session_id, answer_id)

    # ------------------------------------------------------------------ video
    def on_video(self, frame: Any) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        self.frames_seen += 1
        self.last_frame_at = time.time()
        t_ms = self.video_clock.stamp(frame.pts, frame.time_base)
        if self.frames_seen % self.sample_every == 0:
            target = self.target
            image = frame.to_ndarray(format="bgr24")
            if image.shape[1] > self.max_width or image.shape[0] > self.max_height:
                image = _fit(image, self.max_width, self.max_height)
            self.preview = image
            if target.answer_id is not None and not self.sidecar.push_frame(
                image, t_ms, target.session_id, target.answer_id
            ):
                self.frames_dropped += 1
            self.frames_sampled += 1
        self.video_timer.add(time.perf_counter() - start, time.thread_time() - cpu)
        return frame

    # ------------------------------------------------------------------ audio
    def on_audio(self, frame: Any) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        self.last_audio_at = time.time()
        t_ms = self.audio_clock.stamp(frame.pts, frame.time_base)
        samples = self.resampler(frame)
        if samples.size:
            self.audio_seconds += samples.size / 16000.0
            # Device-check level: a peak meter that halves in about a second, so short sounds register.
            self.audio_level = max(float(np.abs(samples).max()), self.audio_level * 0.986)
            target = self.target
            if target.answer_id is not None:
                self.sidecar.push_audio(target.answer_id, t_ms, samples)
        self.audio_timer.add(time.perf_counter() - start, time.thread_time() - cpu)
        return frame

    # streamlit-webrtc's async processing hands over every frame queued since the last call
    # only through these; the single-frame callbacks would silently skip all but the last.
    async def on_video_queued(self, frames: list[Any]) -> list[Any]:
        return [self.on_video(f) for f in frames]

    async def on_audio_queued(self, frames: list[Any]) -> list[Any]:
        return [self.on_audio(f) for f in frames]

    def stats(self) -> dict[str, Any]:
        return {
            "frames_seen": self.frames_seen, "frames_sampled": self.frames_sampled,
            "frames_dropped": self.frames_dropped, "audio_seconds": round(self.audio_seconds, 2),
            "video_p99_ms": self.video_timer.percentile(99), "audio_p99_ms": self.audio_timer.percentile(99),
            "video_cpu_p99_ms": self.video_timer.percentile(99, cpu=True),
            "audio_cpu_p99_ms": self.audio_timer.percentile(99, cpu=True),
            "video_reanchors": self.video_clock.reanchors, "audio_reanchors": self.audio_clock.reanchors,
        }


def _fit(image: np.ndarray, max_width: int, max_height: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    scale = min(max_width / w, max_height / h)
    return cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
