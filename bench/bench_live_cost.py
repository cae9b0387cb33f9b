"""Analysis cost of one live session, in cores: both sidecar workers' CPU time over a live answer.

Runs the real supervisor and worker processes (SecantusDB started here) once per face detector,
side by side in one run: a 30 s answer fed at live pace, 30 fps camera frames of
../shared/data/video/baseline.mp4 at 640x480 of which every ``frame_sample_every``-th is analysed
(as the WebRTC callback samples them) and 0.5 s audio chunks of speech. Cores = the workers'
CPU seconds (user + system, from /proc) over the answer's wall time, until its grade is stored.
The app process (Streamlit, aiortc decoding) is not in this figure.

    python bench/bench_live_cost.py [--seconds 30]
        [--detectors opencv,mediapipe-mesh+iris-both-eyes,mediapipe-mesh+iris,mediapipe]

``mediapipe`` is the default (attention landmark model); ``mediapipe-mesh+iris`` face_landmark + the iris
model, one iris a tracked frame; ``-both-eyes`` both irises every frame (the default before 2026-12-03).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.media import iter_video_frames, load_audio  # noqa: E402
from pipeline.records import SAMPLE_RATE  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.storage import EmbeddedServer  # noqa: E402
from sidecar.emotion import MESH_IRIS, MESH_IRIS_BOTH_EYES, analyzer_settings  # noqa: E402
from sidecar.protocol import AnswerStart  # noqa: E402
from sidecar.supervisor import Sidecar  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CAMERA_FPS = 30.0
QUESTION = "Quote a famous line from a speech and say why it matters."
REFERENCE = "Ask not what your country can do for you, ask what you can do for your country."
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def workers_cpu(car: Sidecar) -> dict[str, float]:
    return {name: cpu_seconds(w.process.pid) for name, w in car.workers.items()}


def live_answer(car: Sidecar, frames: list[np.ndarray], audio: np.ndarray, seconds: float,
                sample_every: int) -> dict[str, float]:
    """One answer at live pace; returns the workers' cores over it and the end-to-stored time."""
    session, answer = uuid.uuid4().hex, uuid.uuid4().hex
    t0 = int(time.time() * 1000)
    car.start_answer(AnswerStart(session, answer, 0, QUESTION, REFERENCE, (), t0))
    before = workers_cpu(car)
    wall0 = time.perf_counter()
    n_frames = int(seconds * CAMERA_FPS)
    chunk = SAMPLE_RATE // 2
    next_audio = 0
    for i in range(n_frames):
        due = wall0 + i / CAMERA_FPS
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)  # live pace: a camera delivers a frame every 1/30 s
        t_ms = t0 + int(i * 1000 / CAMERA_FPS)
        if i % sample_every == 0:
            car.push_frame(frames[(i // sample_every) % len(frames)], t_ms, session, answer)
        while next_audio * 1000 // SAMPLE_RATE <= t_ms - t0 and next_audio < len(audio):
            car.push_audio(answer, t0 + next_audio * 1000 // SAMPLE_RATE, audio[next_audio:next_audio + chunk])
            next_audio += chunk
    ended = time.perf_counter()
    car.end_answer(answer, t0 + int(seconds * 1000))
    result = car.wait_result(answer, 120)
    assert result and result["stored"], result
    stored = time.perf_counter()
    after = workers_cpu(car)
    wall = stored - wall0
    out = {f"{k}_cores": (after[k] - before[k]) / wall for k in after}
    out["cores"] = sum(after[k] - before[k] for k in after) / wall
    out["end_to_stored_s"] = stored - ended
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--detectors", default=f"opencv,{MESH_IRIS_BOTH_EYES},{MESH_IRIS},mediapipe")
    args = ap.parse_args()
    base = Settings()
    every = base.capture.frame_sample_every
    frames = [img for _, img in iter_video_frames(DATA / "video" / "baseline.mp4", every_n=1, max_width=640)]
    jfk = load_audio(DATA / "speech" / "jfk.flac")
    loop = np.concatenate([jfk, np.zeros(SAMPLE_RATE, np.float32)])
    audio = np.tile(loop, int(np.ceil(args.seconds * SAMPLE_RATE / len(loop))))[: int(args.seconds * SAMPLE_RATE)]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(Path(tmp) / "db").start()
        try:
            for detector in args.detectors.split(","):
                face = analyzer_settings(detector)  # a detector, or a variant of the landmark path
                settings = Settings(MONGODB_URI=server.uri, db_name="bench_live", data_dir=Path(tmp),
                                    face_detector=face.detector, face_landmark_model=face.landmark_model,
                                    iris_alternate=face.iris_alternate)
                car = Sidecar(settings, store=True).start()
                try:
                    assert car.wait_ready(300), car.status()
                    rows[detector] = live_answer(car, frames, audio, args.seconds, every)
                finally:
                    car.stop()
        finally:
            server.stop()
    first = next(iter(rows.values()))
    print(f"live answer {args.seconds:g} s, camera {CAMERA_FPS:g} fps, every {every}th frame analysed "
          f"({CAMERA_FPS / every:g} fps), 640x480; cores = workers' CPU s / wall s, this run")
    print("| face detector | emotion worker (cores) | speech worker (cores) | both workers (cores) "
          "| ratio | end to stored (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r.get('emotion_cores', 0):.3f} | {r.get('speech_cores', 0):.3f} | {r['cores']:.3f} "
              f"| {r['cores'] / first['cores']:.2f}x | {r['end_to_stored_s']:.2f} |")


if __name__ == "__main__":
    main()
