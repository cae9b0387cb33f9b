"""Cost of one live session in cores, in the real browser: the app's whole process tree over a live answer.

    python bench/bench_live_session.py [--seconds 20] [--rounds 1] [--configs 3,4]

Side by side in one run, each config on a fresh app (``streamlit run app.py``, SecantusDB started
here, outside the app's tree): "today" (camera asked for 30 fps, every 4th frame analysed: 7.5 fps)
and "new" (the defaults: camera at ``camera_fps`` 15, ``analysed_fps`` 7.5 by media time). Debian's
Chromium with a fake 30 fps 640x480 camera (../shared/data/video/baseline.mp4) and a fake microphone
(jfk.flac, looped) passes the device check and gives one answer of ``--seconds`` s of captured audio.
Over the answer (Start answer → that much audio captured) the bench reads utime + stime of every
process in the app's tree (/proc/<pid>/stat; the Streamlit/aiortc process, the emotion and speech
workers) and of every thread of the app process (/proc/<pid>/task/*/stat: where its time goes).
The app tree is pinned to cpu 0 and Chromium (with Playwright's driver) to cpu 1 by CPU affinity,
the system call ``taskset`` makes, inherited from this process when each is started.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.storage import EmbeddedServer  # noqa: E402
from tests.browser import (  # noqa: E402
    answer_audio_seconds,
    fake_media_args,
    go_to_interview,
    launch_chromium,
    running_app,
    wait_answer_audio,
    wait_text,
)

DATA = ROOT.parent / "shared" / "data"
TICKS = os.sysconf("SC_CLK_TCK")
APP_CPU, BROWSER_CPU = 0, 1
CONFIGS: dict[str, dict[str, str]] = {
    # main bfc92f3's defaults: 8 s live ASR parts decoded window after window, and Streamlit's full
    # gc.collect(2) after every script run (each live-panel refresh).
    "before (8 s parts, every window, gc per run)": {
        "MOCKAI_ASR_CHUNK_SECONDS": "8", "MOCKAI_ASR_ONE_WINDOW_PARTS": "false",
        "STREAMLIT_RUNNER_POST_SCRIPT_GC": "true"},
    "one window a part, no gc per run, 8 s parts": {"MOCKAI_ASR_CHUNK_SECONDS": "8"},
    # the face path until 2026-12-03: face_landmark + the iris model on both eyes every frame
    "16 s parts, face mesh+iris both eyes": {"MOCKAI_FACE_LANDMARK_MODEL": "mesh+iris",
                                             "MOCKAI_IRIS_ALTERNATE": "false"},
    "now (the defaults: + 16 s parts, attention face model)": {},
}
COUNTERS = r"frames received: (\d+) · sampled: (\d+)"
# Loaded by the app's Python processes only in this bench (PYTHONPATH): each thread writes its OS
# thread id and Python name when it starts, so the per-thread CPU figures can be named.
THREAD_HOOK = """import os, threading
_log = os.environ.get("BENCH_THREAD_LOG")
if _log:
    _inner = threading.Thread._bootstrap_inner
    def _named(self):
        try:
            with open(_log, "a") as f:
                f.write(f"{os.getpid()} {threading.get_native_id()} {self.name}\\n")
        except OSError:
            pass
        _inner(self)
    threading.Thread._bootstrap_inner = _named
"""


def make_fake_media(out: Path) -> tuple[Path, Path]:
    """A 30 fps 640x480 .y4m of the webcam clip and a 48 kHz .wav of speech with a pause (Chromium loops both)."""
    out.mkdir(parents=True, exist_ok=True)
    video, audio = out / "camera.y4m", out / "mic.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(DATA / "video" / "baseline.mp4"),
                    "-vf", "scale=640:480,fps=30", "-pix_fmt", "yuv420p", str(video)], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(DATA / "speech" / "jfk.flac"),
                    "-af", "apad=pad_dur=1", "-ar", "48000", "-ac", "1", str(audio)], check=True)
    return video, audio


def _stat(path: str) -> tuple[str, int, float]:
    """(comm, ppid, utime + stime seconds) from a /proc stat file."""
    with open(path) as f:
        raw = f.read()
    comm = raw[raw.index("(") + 1: raw.rindex(")")]
    fields = raw.rsplit(")", 1)[1].split()
    return comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def tree(root: int) -> list[int]:
    """``root`` and all its descendants, from the ppid of every process in /proc."""
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                parent[int(name)] = _stat(f"/proc/{name}/stat")[1]
            except (OSError, ValueError):
                continue
    found, frontier = [root], [root]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def role(pid: int, app_pid: int) -> str:
    """What a process of the app's tree is: the app itself, or a worker told apart by what it has loaded."""
    if pid == app_pid:
        return "app"
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return "other"
    if "ctranslate2" in maps or "whisper" in maps:
        return "speech"
    if "litert" in maps or "tflite" in maps or "cv2" in maps:
        return "emotion"
    return "other"


def thread_names(log: Path, pid: int) -> dict[str, str]:
    names = {str(pid): "MainThread"}
    if log.exists():
        for line in log.read_text().splitlines():
            p, tid, name = line.split(" ", 2)
            if int(p) == pid:
                names[tid] = name
    return names


def snapshot(app_pid: int) -> tuple[dict[int, float], dict[str, float]]:
    """CPU seconds per process of the tree, and per thread of the app process (by thread id)."""
    procs: dict[int, float] = {}
    for pid in tree(app_pid):
        try:
            procs[pid] = _stat(f"/proc/{pid}/stat")[2]
        except OSError:
            continue
    threads: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{app_pid}/task"):
        try:
            cpu = _stat(f"/proc/{app_pid}/task/{tid}/stat")[2]
        except OSError:
            continue
        threads[tid] = cpu
    return procs, threads


def allowed_cpus(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list"):
            return line.split(":", 1)[1].strip()
    return "?"


@contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """This process on ``cpu`` while the block starts children (they inherit it), then as before."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def counters(page: Any) -> tuple[int, int]:
    m = wait_text(page, COUNTERS)
    return int(m.group(1)), int(m.group(2))


def chromium_pids() -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if "chrom" in _stat(f"/proc/{name}/stat")[0]:
                    pids.append(int(name))
            except (OSError, ValueError):
                continue
    return pids


def one_session(env: dict[str, str], media: tuple[Path, Path], mongo_uri: str, seconds: float,
                work: Path) -> dict[str, Any]:
    """A fresh app with ``env``, one candidate through the device check and one answer; the figures."""
    from playwright.sync_api import sync_playwright

    hook, log = work / "hook", work / f"threads-{uuid.uuid4().hex[:8]}.txt"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(THREAD_HOOK)
    full_env = {"MONGODB_URI": mongo_uri, "MOCKAI_DB_NAME": f"bench_{uuid.uuid4().hex[:8]}",
                "MOCKAI_FLUSH_SECONDS": "1", "PYTHONPATH": str(hook), "BENCH_THREAD_LOG": str(log), **env}
    with ExitStack() as stack:
        with pinned(APP_CPU):  # the app and every worker it starts inherit cpu 0
            app = stack.enter_context(running_app(work / uuid.uuid4().hex[:8], env=full_env, timeout=240))
        p = stack.enter_context(sync_playwright())  # this process is on cpu 1: so are the driver and Chromium
        browser = launch_chromium(p, fake_media_args(*media))
        stack.callback(browser.close)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(app.url)
        go_to_interview(page, work, "Bench Candidate", 1)
        page.get_by_role("button", name="Start answer").click()
        wait_text(page, "Live transcript:")
        audio0 = answer_audio_seconds(page)
        seen0, kept0 = counters(page)
        procs0, threads0 = snapshot(app.process.pid)
        wall0 = time.monotonic()
        audio1 = wait_answer_audio(page, audio0 + seconds, timeout_s=seconds * 6 + 60)
        procs1, threads1 = snapshot(app.process.pid)
        wall = time.monotonic() - wall0
        seen1, kept1 = counters(page)
        finish = time.monotonic()
        page.get_by_role("button", name="Finish answer").click()
        wait_text(page, "Feedback:", 120)
        feedback_s = time.monotonic() - finish
        cores: dict[str, float] = {}
        for pid, cpu in procs1.items():
            r = role(pid, app.process.pid)
            cores[r] = cores.get(r, 0.0) + (cpu - procs0.get(pid, 0.0)) / wall
        names = thread_names(log, app.process.pid)
        hot = sorted(((t1 - threads0.get(t, 0.0)) / wall, f"{names.get(t, 'native')}/{t}")
                     for t, t1 in threads1.items())[::-1]
        # Threads that ended during the answer (Streamlit's script runs, one per rerun) are in the
        # process's time but no longer in its task list.
        hot.insert(0, (cores.get("app", 0.0) - sum(v for v, _ in hot), "ended threads"))
        pins = {"app": allowed_cpus(app.process.pid),
                "workers": sorted({allowed_cpus(q) for q in procs1 if q != app.process.pid}),
                "chromium": sorted({allowed_cpus(q) for q in chromium_pids()})}
    return {"cores": cores, "hot_threads": hot, "wall_s": wall, "audio_s": audio1 - audio0,
            "received_fps": (seen1 - seen0) / wall, "analysed_fps": (kept1 - kept0) / wall,
            "feedback_s": feedback_s, "pins": pins}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of answer audio captured")
    ap.add_argument("--rounds", type=int, default=1, help="each config this many times, alternating")
    ap.add_argument("--configs", default="", help="comma list of config numbers to run (1-based; default all)")
    args = ap.parse_args()
    os.sched_setaffinity(0, {BROWSER_CPU})  # this process, the database and Chromium: off the app's core
    load = os.getloadavg()
    names = list(CONFIGS)
    chosen = [names[int(k) - 1] for k in args.configs.split(",") if k.strip()] or names
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        media = make_fake_media(work / "media")
        server = EmbeddedServer(work / "db").start()
        rows: list[tuple[str, dict[str, Any]]] = []
        try:
            for _ in range(args.rounds):
                for name in chosen:
                    rows.append((name, one_session(CONFIGS[name], media, server.uri, args.seconds, work)))
                    print(f"{name}: done", file=sys.stderr)
        finally:
            server.stop()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"live answer of {args.seconds:g} s captured audio, Chromium fake 30 fps 640x480 camera + jfk.flac; "
          f"commit {commit}; load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cpus")
    print(f"pinned by CPU affinity (taskset's system call): app tree on cpu {APP_CPU}, Chromium + Playwright + "
          f"SecantusDB + this bench on cpu {BROWSER_CPU}; measured pins: {rows[0][1]['pins']}")
    print("cores = CPU s (utime + stime, /proc) over the answer's wall s; 'other' = any further process of the tree")
    print()
    print("| config | received fps | analysed fps | app process | emotion worker | speech worker | other "
          "| total (cores) | finish → feedback (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        c = r["cores"]
        print(f"| {name} | {r['received_fps']:.1f} | {r['analysed_fps']:.1f} | {c.get('app', 0):.3f} "
              f"| {c.get('emotion', 0):.3f} | {c.get('speech', 0):.3f} | {c.get('other', 0):.3f} "
              f"| {sum(c.values()):.3f} | {r['feedback_s']:.2f} |")
    if args.rounds > 1:
        print()
        print(f"median of {args.rounds} rounds:")
        print("| config | received fps | app process | emotion worker | speech worker | total (cores) "
              "| finish → feedback (s) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name in chosen:
            mine = [r for n, r in rows if n == name]

            def med(f: Any, mine: list[dict[str, Any]] = mine) -> float:
                return float(statistics.median(f(r) for r in mine))

            print(f"| {name} | {med(lambda r: r['received_fps']):.1f} | {med(lambda r: r['cores'].get('app', 0)):.3f} "
                  f"| {med(lambda r: r['cores'].get('emotion', 0)):.3f} "
                  f"| {med(lambda r: r['cores'].get('speech', 0)):.3f} "
                  f"| {med(lambda r: sum(r['cores'].values())):.3f} | {med(lambda r: r['feedback_s']):.2f} |")
    print()
    for name, r in rows:
        print(f"{name}: app process threads (cores): "
              + ", ".join(f"{t} {v:.3f}" for v, t in r["hot_threads"][:9]))


if __name__ == "__main__":
    main()
