"""WebRTC video callback cost with the app process busy: inline conversion vs hand-off thread.

    python bench/bench_capture.py [--seconds 20] [--busy-threads 3]

Feeds real 640x480 ``av`` frames at 30 fps (every frame sampled, as in the soak) into
``Capture.on_video`` from one thread, as aiortc's event loop would, while ``--busy-threads``
other Python threads keep the GIL busy the way Streamlit reruns, the event pump and the
writer do. Side by side in one run:

- inline: the callback converts to BGR and copies into the shared-memory ring itself (what
  MockAI did before: both steps let go of the GIL and must wait to get it back);
- hand-off (MockAI): the callback stamps and enqueues; the hand-off thread does the rest.

Prints p50/p99 wall and thread-CPU time per callback and the ratio.
"""

from __future__ import annotations

import argparse
import platform
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sidecar.capture import Capture  # noqa: E402
from sidecar.ring import FrameRing  # noqa: E402


class RingSink:
    def __init__(self) -> None:
        self.ring = FrameRing(16)

    def push_frame(self, image: np.ndarray, t_ms: int, session_id: str, answer_id: str, block: bool = False) -> bool:
        return self.ring.put(image, t_ms, session_id, answer_id, block=block)

    def push_audio(self, answer_id: str, t_ms: int, samples: np.ndarray) -> None:
        pass


class InlineCapture(Capture):
    """The previous design: the callback converts and copies the sampled frame itself."""

    def on_video(self, frame: Any) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        self.frames_seen += 1
        t_ms = self.video_clock.stamp(frame.pts, frame.time_base)
        if self._keep(t_ms):
            self._copy_video(frame, t_ms, self.target)
            self.frames_sampled += 1
        self.video_timer.add(time.perf_counter() - start, time.thread_time() - cpu)
        return frame


def busy(stop: threading.Event) -> None:
    """Pure-Python work holding the GIL, with short releases (like a page rerun)."""
    while not stop.is_set():
        sum(i * i for i in range(20_000))
        time.sleep(0.001)


def drain(ring: FrameRing, stop: threading.Event) -> None:
    while not stop.is_set():
        ring.get(timeout=0.05)


def run(cls: type[Capture], seconds: float, busy_threads: int) -> dict[str, float]:
    sink = RingSink()
    cap = cls(sink, analysed_fps=30)  # every frame of the 30 fps feed sampled
    cap.aim("bench", "answer")
    stop = threading.Event()
    threads = [threading.Thread(target=busy, args=(stop,), daemon=True) for _ in range(busy_threads)]
    threads.append(threading.Thread(target=drain, args=(sink.ring, stop), daemon=True))
    for t in threads:
        t.start()
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(30):
        f = av.VideoFrame.from_ndarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), format="bgr24")
        frames.append(f.reformat(format="yuv420p"))  # what the VP8 decoder hands over
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        f = frames[i % 30]
        f.pts, f.time_base = i * 3000, Fraction(1, 90000)
        cap.on_video(f)
        i += 1
        time.sleep(max(0.0, start + i / 30 - time.perf_counter()))
    cap.flush(5)
    stop.set()
    for t in threads:
        t.join(2)
    wall, cpu = np.fromiter(cap.video_timer.wall, float), np.fromiter(cap.video_timer.cpu, float)
    out = {"frames": i, "p50": float(np.percentile(wall, 50)), "p99": float(np.percentile(wall, 99)),
           "cpu_p99": float(np.percentile(cpu, 99)), "in_ring": sink.ring.stats()["frames_in"]}
    sink.ring.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--busy-threads", type=int, default=3)
    args = ap.parse_args(argv)
    inline = run(InlineCapture, args.seconds, args.busy_threads)
    handoff = run(Capture, args.seconds, args.busy_threads)
    print(f"Video callback, 640x480 at 30 fps, every frame sampled, {args.busy_threads} GIL-busy threads; "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}\n")
    print("| callback | frames | in ring | p50 wall ms | p99 wall ms | p99 thread CPU ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in (("inline convert + copy (before)", inline), ("stamp + enqueue, hand-off thread (MockAI)", handoff)):
        print(f"| {name} | {r['frames']} | {r['in_ring']} | {r['p50']:.3f} | {r['p99']:.3f} | {r['cpu_p99']:.3f} |")
    print(f"\np99 wall: hand-off {inline['p99'] / handoff['p99']:.0f}x lower than inline (goal < 2 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
