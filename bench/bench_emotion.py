"""Benchmark of sidecar.emotion on one CPU core with real webcam-style video.

    python bench/bench_emotion.py [--video ../shared/data/video/baseline.mp4] [--frames 300]
        [--detectors opencv,mediapipe-mesh+iris-both-eyes,mediapipe-mesh+iris,mediapipe] [--rounds 3]
        [--compare-only] [--mesh-stages]

Frames are decoded and downscaled to 640x480 (centre crop to 4:3, as a webcam gives) before any
timing: the sidecar receives decoded frames from its ring, so decoding is not its cost. The
process is pinned to one core and OpenCV/tflite to one thread, as in the worker.

Prints markdown tables: the face detectors side by side in one run (CPU per analysed frame,
time.process_time, on every 4th frame of each ../shared/data/video/*.mp4 at 640x480, rounds
alternating between detectors; face-found rate per video; the ratio; ``mediapipe`` runs the attention
landmark model, ``mediapipe-mesh+iris`` face_landmark + the iris model, one eye a tracked frame, and
``-both-eyes`` both every frame), what one iris a frame changes in the gaze, then, for Haar (opencv):
sustained fps with full detection on every sample (detect_every=1) vs the default tracking,
per-stage latencies, FER tflite latency per face, and the CPU seconds of analysing every frame
vs every 4th frame of the same 10 s clip. ``--mesh-stages`` adds the landmark path's CPU per stage.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repo importable
    sys.path.insert(0, str(ROOT))

import sidecar.emotion  # noqa: E402
from pipeline.settings import EmotionSettings  # noqa: E402
from sidecar.emotion import MESH_IRIS, MESH_IRIS_BOTH_EYES, EmotionAnalyzer, analyzer_settings  # noqa: E402
from sidecar.emotion_classifiers import FerTfliteEmotion, face_crop  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SAMPLE_FPS = 7.5  # the goal: every 4th frame of a 30 fps camera, sustained


def load_frames(path: Path, size: tuple[int, int] = (640, 480)) -> tuple[list[np.ndarray], float]:
    import av

    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 30)
        for frame in container.decode(stream):
            img = frame.to_ndarray(format="bgr24")
            h, w = img.shape[:2]
            cw = min(w, round(h * size[0] / size[1]))  # centre crop to the target aspect ratio
            x0 = (w - cw) // 2
            frames.append(cv2.resize(img[:, x0 : x0 + cw], size, interpolation=cv2.INTER_AREA))
    return frames, fps


def ping_pong(n_src: int, n_out: int) -> list[int]:
    """Indices 0..n-1, n-2..1, 0.. : a continuous longer clip from a short one (no jump, no repeat)."""
    cycle = list(range(n_src)) + list(range(n_src - 2, 0, -1))
    return [cycle[i % len(cycle)] for i in range(n_out)]


def every_nth(order: list[int], n: int) -> list[int]:
    """order[off::n] for the first offset whose samples never repeat a frame back to back (a
    repeat would hit the analyzer's frozen-frame shortcut and flatter the numbers)."""
    for off in range(n):
        out = order[off::n]
        if all(a != b for a, b in zip(out, out[1:], strict=False)):
            return out
    raise ValueError("every offset repeats a frame")


def pin_one_core() -> str:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
        return f"pinned to CPU {cpus[-1]} of {len(cpus)}"
    except (AttributeError, OSError):
        return "not pinned (no sched_setaffinity here)"

_FIND_EYES = sidecar.emotion.find_eyes  # type: ignore[attr-defined]  # re-imported name


class StageTimer:
    """Wraps analyzer internals to attribute time to stages (bench only)."""

    def __init__(self, analyzer: EmotionAnalyzer) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        for attr, stage in (
            ("_detect_full", "full detection"),
            ("_near", "tracking"),
        ):
            boxes = analyzer._boxes  # the box detectors' tracker (sidecar/face_tracking.py)
            setattr(boxes, attr, self._wrap(getattr(boxes, attr), stage))
        # eyes are found by a module function of sidecar.emotion (issue 10 split); wrap the original each time
        sidecar.emotion.find_eyes = self._wrap(_FIND_EYES, "eyes")  # type: ignore[attr-defined]
        model = analyzer._emotion
        assert model is not None
        model.predict = self._wrap(model.predict, "emotion model")  # type: ignore[method-assign]

    def _wrap(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.times[stage].append(time.perf_counter() - t0)

        return timed


def mesh_stages(videos: list[Path], rounds: int) -> None:
    """CPU ms per analysed frame of each stage of the landmark path (process_time around each call)."""
    import sidecar.face_geometry as geo

    a = EmotionAnalyzer(EmotionSettings(detector="mediapipe", threads=1))
    a.warm_up()
    assert a._mesh is not None and a._emotion is not None
    times: dict[str, float] = defaultdict(float)

    def wrap(owner: Any, attr: str, stage: str) -> None:
        fn = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                times[stage] += time.process_time() - t0

        setattr(owner, attr, timed)

    mesh, orig = a._mesh, (geo.aligned_crop, geo.head_pose)  # module functions: put back afterwards
    wrap(mesh, "detect", "BlazeFace (re-)detection")
    wrap(mesh, "_landmarks_in", "landmarks and both irises (attention model, its custom ops): 192x192 crop + model")
    wrap(a._emotion, "predict", "FER model (with its input scaling)")
    wrap(geo, "aligned_crop", "aligned FER crop (gray of its footprint)")
    wrap(geo, "head_pose", "head pose (solvePnP)")
    try:
        clips = [(f, every_nth(list(range(len(f))), 4)) for f, _fps in (load_frames(v) for v in videos)]
        n, c0 = 0, time.process_time()
        for _ in range(rounds):
            for frames, order in clips:
                a.reset()
                for k, i in enumerate(order):
                    a.analyze(frames[i], k / SAMPLE_FPS)
                    n += 1
        total = time.process_time() - c0
    finally:
        geo.aligned_crop, geo.head_pose = orig
    print(f"## mediapipe per stage, CPU ms per analysed frame ({n} frames, {rounds} rounds)\n")
    print("| stage | ms/frame | share |")
    print("|---|---:|---:|")
    for stage, sec in sorted(times.items(), key=lambda kv: -kv[1]):
        print(f"| {stage} | {1000 * sec / n:.3f} | {100 * sec / total:.0f} % |")
    rest = total - sum(times.values())
    print(f"| everything else (frame checks, geometry, the record) | {1000 * rest / n:.3f} | {100 * rest / total:.0f} % |")
    print(f"| total | {1000 * total / n:.3f} | 100 % |\n")


def run(analyzer: EmotionAnalyzer, frames: list[np.ndarray], order: list[int], fps: float) -> dict[str, Any]:
    analyzer.reset()
    lat, results = [], []
    c0, w0 = time.process_time(), time.perf_counter()
    for k, i in enumerate(order):
        t0 = time.perf_counter()
        results.append(analyzer.analyze(frames[i], k / fps))
        lat.append(time.perf_counter() - t0)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {
        "n": len(order),
        "cpu_s": cpu,
        "wall_s": wall,
        "fps": len(order) / wall,
        "cpu_ms": 1000 * cpu / len(order),
        "p50_ms": 1000 * statistics.median(lat),
        "p95_ms": 1000 * float(np.percentile(lat, 95)),
        "face_pct": 100.0 * sum(r["face"] for r in results) / len(results),
        "tracked_pct": 100.0 * sum(r["tracked"] and not r["frozen"] for r in results) / len(results),
        "frozen": sum(r["frozen"] for r in results),
    }


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def iris_alternation(videos: list[Path]) -> None:
    """What measuring one iris a frame (the other reused from the frame before) changes in the gaze,
    against both irises on every frame, on every 4th frame of each clip (7.5 fps, the live rate)."""
    both = EmotionAnalyzer(analyzer_settings(MESH_IRIS_BOTH_EYES))
    alt = EmotionAnalyzer(analyzer_settings(MESH_IRIS))
    print("## mesh+iris: one iris a tracked frame (iris_alternate) against both irises every frame, "
          "every 4th frame\n")
    print("| video | frames judged (both / alternating) | eye contact agrees | mean abs gaze yaw diff (deg) "
          "| max | mean abs gaze pitch diff (deg) | max |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for v in videos:
        frames, _fps = load_frames(v)
        order = every_nth(list(range(len(frames))), 4)
        both.reset()
        alt.reset()
        gb = [both.analyze(frames[i], k / SAMPLE_FPS)["gaze"] for k, i in enumerate(order)]
        ga = [alt.analyze(frames[i], k / SAMPLE_FPS)["gaze"] for k, i in enumerate(order)]
        pairs = [(b, a) for b, a in zip(gb, ga, strict=True) if b["yaw"] is not None and a["yaw"] is not None]
        judged = (sum(g["eye_contact"] is not None for g in gb), sum(g["eye_contact"] is not None for g in ga))
        agree = sum(b["eye_contact"] == a["eye_contact"] for b, a in zip(gb, ga, strict=True))
        dy = [abs(float(b["yaw"]) - float(a["yaw"])) for b, a in pairs]
        dp = [abs(float(b["pitch"]) - float(a["pitch"])) for b, a in pairs]
        print(f"| {v.name} | {judged[0]} / {judged[1]} | {100 * agree / len(order):.1f} % | "
              f"{statistics.fmean(dy) if dy else float('nan'):.2f} | {max(dy, default=float('nan')):.2f} | "
              f"{statistics.fmean(dp) if dp else float('nan'):.2f} | {max(dp, default=float('nan')):.2f} |")
    print()


def compare_detectors(videos: list[Path], detectors: list[str], rounds: int) -> None:
    """CPU ms per analysed frame and face-found % per video, detectors alternating round by round."""
    clips = []
    for v in videos:
        frames, fps = load_frames(v)
        clips.append((v.name, frames, every_nth(list(range(len(frames))), 4), fps / 4))
    analyzers: dict[str, EmotionAnalyzer] = {}
    for d in detectors:
        try:
            a = EmotionAnalyzer(analyzer_settings(d))
            a.warm_up()
            analyzers[d] = a
        except Exception as exc:  # reported, never timed as 0
            print(f"{d}: unavailable here ({type(exc).__name__}: {exc})\n")
    names = list(analyzers)
    cpu: dict[tuple[str, str], list[float]] = defaultdict(list)
    face: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for name, frames, order, fps in clips:
            for d in names:
                r = run(analyzers[d], frames, order, fps)
                assert r["frozen"] == 0
                cpu[(name, d)].append(r["cpu_ms"])
                face[(name, d)] = r["face_pct"]  # the same frames every round: deterministic
    print(f"## Face detectors side by side, every 4th frame at 640x480, one core, {rounds} alternating rounds\n")
    base = names[0] if names else ""
    cols = [f"{d} CPU ms/frame (median)" for d in names] + [f"{d} / {base}" for d in names[1:]]
    cols += [f"{d} face %" for d in names]
    print("| video | frames | " + " | ".join(cols) + " |")
    print("|---|---:|" + "---:|" * len(cols))
    totals: dict[str, list[float]] = defaultdict(list)
    for name, _frames, order, _fps in clips:
        med = {d: statistics.median(cpu[(name, d)]) for d in names}
        for d in names:
            totals[d] += [m * len(order) for m in cpu[(name, d)]]
        cells = [f"{med[d]:.2f}" for d in names] + [ratio(med[d], med[base]) for d in names[1:]]
        cells += [f"{face[(name, d)]:.1f}" for d in names]
        print(f"| {name} | {len(order)} | " + " | ".join(cells) + " |")
    n_all = sum(len(c[2]) for c in clips)
    if not names or not n_all:
        return
    # per round: the CPU of every clip summed, over all frames; the median round
    per = {d: statistics.median([sum(totals[d][i::rounds]) for i in range(rounds)]) / n_all for d in names}
    face_all = {d: sum(face[(c[0], d)] * len(c[2]) for c in clips) / n_all for d in names}
    cells = [f"{per[d]:.2f}" for d in names] + [ratio(per[d], per[base]) for d in names[1:]]
    cells += [f"{face_all[d]:.1f}" for d in names]
    print(f"| all | {n_all} | " + " | ".join(cells) + " |")
    for d in names[1:]:
        print(f"\n{base} / {d} CPU per analysed frame: {ratio(per[base], per[d])} "
              f"({d} uses {100 * per[d] / per[base]:.0f} % of {base}'s CPU)")
    shares = ", ".join(f"{d} {100 * per[d] * SAMPLE_FPS / 1000:.1f} %" for d in names)
    print(f"\nShare of one core at {SAMPLE_FPS} fps: {shares}\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=DATA / "video" / "baseline.mp4")
    ap.add_argument("--frames", type=int, default=300, help="samples per sustained run")
    ap.add_argument("--clip-seconds", type=float, default=10.0)
    ap.add_argument("--detectors", default=f"opencv,{MESH_IRIS_BOTH_EYES},{MESH_IRIS},mediapipe",
                    help="compared side by side (first = baseline; mediapipe-mesh+iris: face_landmark + the iris "
                         "model, -both-eyes: iris_alternate off)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the detector comparison")
    ap.add_argument("--compare-only", action="store_true", help="only the detector comparison")
    ap.add_argument("--mesh-stages", action="store_true", help="also the landmark path's CPU per stage")
    args = ap.parse_args(argv)

    pinned = pin_one_core()
    videos = sorted((DATA / "video").glob("*.mp4"))
    print(f"# sidecar.emotion bench\n\n{pinned}; OpenCV {cv2.__version__}, 1 thread; "
          f"load average at start {os.getloadavg()[0]:.2f}\n")
    detectors = list(dict.fromkeys(d.strip() for d in args.detectors.split(",") if d.strip()))
    compare_detectors(videos, detectors, args.rounds)
    if MESH_IRIS in detectors:
        iris_alternation(videos)
    if args.mesh_stages:
        mesh_stages(videos, args.rounds)
    if args.compare_only:
        return 0
    frames, fps = load_frames(args.video)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"## Haar (opencv) in detail: detection schedule, stages, sampling\n\n{args.video.name}: {len(frames)} frames at {fps:g} fps -> 640x480; {pinned}; "
        f"OpenCV {cv2.__version__}, 1 thread; load average at start {load:.2f}\n"
    )

    # sustained fps: consecutive samples of a 7.5 fps stream (every 4th frame), looped ping-pong
    samples = list(range(0, len(frames), 4))
    order = [samples[i] for i in ping_pong(len(samples), args.frames)]
    configs = {"detect_every=1": 1, "detect_every=3 (default)": EmotionSettings().detect_every}
    out, stages = {}, {}
    for name, every in configs.items():
        a = EmotionAnalyzer(EmotionSettings(detector="opencv", detect_every=every, threads=1))
        a.warm_up()
        timer = StageTimer(a)
        out[name] = run(a, frames, order, SAMPLE_FPS)
        assert out[name]["frozen"] == 0
        stages[name] = timer.times
    full, track = out["detect_every=1"], out["detect_every=3 (default)"]
    print(f"## Sustained analysis, {args.frames} samples at 640x480, one core\n")
    print("| metric | detect_every=1 | detect_every=3 (default) | ratio (3 vs 1) |")
    print("|---|---:|---:|---:|")
    rows = [
        ("sustained fps (wall)", "fps", "{:.1f}"),
        ("CPU ms per frame", "cpu_ms", "{:.1f}"),
        ("latency p50 ms", "p50_ms", "{:.1f}"),
        ("latency p95 ms", "p95_ms", "{:.1f}"),
        ("face found %", "face_pct", "{:.0f}"),
        ("tracked (no full detection) %", "tracked_pct", "{:.0f}"),
    ]
    for label, key, fmt in rows:
        print(
            f"| {label} | {fmt.format(full[key])} | {fmt.format(track[key])} | {ratio(track[key], full[key])} |"
        )
    share = [100 * r["cpu_ms"] * SAMPLE_FPS / 1000 for r in (full, track)]
    print(
        f"| share of one core at {SAMPLE_FPS} fps % | {share[0]:.0f} | {share[1]:.0f} | {ratio(share[1], share[0])} |"
    )
    print(
        f"| headroom vs {SAMPLE_FPS} fps goal | {full['fps'] / SAMPLE_FPS:.1f}x | {track['fps'] / SAMPLE_FPS:.1f}x | |"
    )

    print("\n## Per-stage latency (ms, mean / p95, calls)\n")
    print("| stage | detect_every=1 | detect_every=3 (default) |")
    print("|---|---:|---:|")
    for stage in ("full detection", "tracking", "eyes", "emotion model"):
        cells = []
        for name in configs:
            ts = stages[name].get(stage, [])
            cells.append(
                f"{1000 * np.mean(ts):.2f} / {1000 * np.percentile(ts, 95):.2f} ({len(ts)})" if ts else "-"
            )
        print(f"| {stage} | {cells[0]} | {cells[1]} |")

    # FER tflite alone on real face crops (preprocessing + invoke)
    a = EmotionAnalyzer(EmotionSettings(detector="opencv", detect_every=1))
    a.warm_up()
    crops = []
    for i in range(0, len(frames), 4):
        r = a.analyze(frames[i], 0.0)
        if r["face"]:
            x, y, w, h = r["box"] or (0, 0, 0, 0)
            crops.append(face_crop(cv2.cvtColor(frames[i], cv2.COLOR_BGR2GRAY), (x, y, w, h)))
    fer = FerTfliteEmotion(threads=1)
    fer.load()
    lat = []
    for _ in range(max(1, 500 // max(1, len(crops)))):
        for c in crops:
            t0 = time.perf_counter()
            fer.predict(c)
            lat.append(time.perf_counter() - t0)
    print(f"\n## FER tflite per face ({len(lat)} calls on {len(crops)} real 64x64 crops)\n")
    print("| mean ms | p50 ms | p95 ms | faces/s on one core |")
    print("|---:|---:|---:|---:|")
    print(
        f"| {1000 * np.mean(lat):.3f} | {1000 * np.median(lat):.3f} | {1000 * np.percentile(lat, 95):.3f} | "
        f"{1 / np.mean(lat):.0f} |"
    )

    # CPU of every frame vs every 4th frame of the same 10 s clip
    n_clip = round(args.clip_seconds * fps)
    clip = ping_pong(len(frames), n_clip)
    a = EmotionAnalyzer(EmotionSettings(detector="opencv", threads=1))
    a.warm_up()
    every_frame = run(a, frames, clip, fps)
    fourth = run(a, frames, every_nth(clip, 4), fps / 4)
    assert every_frame["frozen"] == fourth["frozen"] == 0
    print(
        f"\n## CPU for a {args.clip_seconds:g} s clip ({n_clip} frames, ping-pong of the video), default options\n"
    )
    print("| | every frame | every 4th frame | ratio (4th vs every) |")
    print("|---|---:|---:|---:|")
    print(f"| frames analysed | {every_frame['n']} | {fourth['n']} | {ratio(fourth['n'], every_frame['n'])} |")
    print(
        f"| CPU seconds | {every_frame['cpu_s']:.2f} | {fourth['cpu_s']:.2f} | {ratio(fourth['cpu_s'], every_frame['cpu_s'])} |"
    )
    print(
        f"| CPU ms per analysed frame | {every_frame['cpu_ms']:.1f} | {fourth['cpu_ms']:.1f} | "
        f"{ratio(fourth['cpu_ms'], every_frame['cpu_ms'])} |"
    )
    print(
        f"| share of one core in real time % | {100 * every_frame['cpu_s'] / args.clip_seconds:.0f} | "
        f"{100 * fourth['cpu_s'] / args.clip_seconds:.0f} | |"
    )
    print(f"| face found % | {every_frame['face_pct']:.0f} | {fourth['face_pct']:.0f} | |")
    saved = 100 * (1 - fourth["cpu_s"] / every_frame["cpu_s"])
    print(f"\nSampling every 4th frame saves {saved:.0f} % of the CPU.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
