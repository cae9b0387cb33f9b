"""A long live answer in the real browser with the sidecar saturated.

Chromium with a fake camera and microphone streams into the app for ``--minutes``
(default 10) as ONE answer, with every frame sampled (30 fps into a worker that
cannot keep up, so the ring drops frames and the speech worker shares the CPU).
Checks the WebRTC connection stays up (frames keep arriving, no reconnect), that no
audio is lost (audio seconds received by the callback = stored = wall time), and
prints the callback cost (p99 per frame).

    python bench/bench_soak.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pymongo  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from pipeline.storage import EmbeddedServer  # noqa: E402
from tests.browser import fake_media_args, go_to_interview, launch_chromium, running_app, wait_text  # noqa: E402
from tests.test_e2e_interview import make_fake_media  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


BASELINE_ENV = {"MOCKAI_EMOTION_WORKER_NICE": "0", "MOCKAI_GIL_SWITCH_MS": "5", "MOCKAI_GC_FREEZE": "false"}  # before: worker at normal priority,
# Python's default 5 ms thread switch interval


def soak(minutes: float, extra_env: dict[str, str] | None = None) -> dict[str, float]:
    """One live answer of ``minutes`` in Chromium; the figures stored with it."""
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        server = EmbeddedServer(tmp / "db").start()
        db_name = f"soak_{uuid.uuid4().hex[:6]}"
        env = {"MONGODB_URI": server.uri, "MOCKAI_DB_NAME": db_name, "MOCKAI_FRAME_SAMPLE_EVERY": "1",
               "MOCKAI_STALE_ANSWER_SECONDS": "60", **(extra_env or {})}
        video, audio = make_fake_media(DATA, tmp / "media")
        try:
            with running_app(tmp / "app", env=env) as app, sync_playwright() as p:
                browser = launch_chromium(p, fake_media_args(video, audio))
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.goto(app.url)
                go_to_interview(page, tmp, "Soak", 1)
                page.get_by_role("button", name="Start answer").click()
                started = time.monotonic()
                last = -1
                load = []
                while time.monotonic() - started < minutes * 60:
                    page.wait_for_timeout(10_000)
                    body = page.inner_text("body")
                    m = re.search(r"frames received: (\d+) · sampled: (\d+) · audio: ([\d.]+) s", body)
                    assert m, body[-1500:]
                    frames, audio_s = int(m.group(1)), float(m.group(3))
                    assert frames > last, f"frames stopped arriving at {frames}"
                    assert page.frame_locator('iframe[title*="streamlit_webrtc"]').get_by_role(
                        "button", name=re.compile("STOP", re.I)).is_visible(), "connection dropped"
                    last = frames
                    load.append(os.getloadavg()[0])
                    print(f"t={time.monotonic() - started:6.0f}s frames={frames} audio={audio_s:.1f}s "
                          f"load={load[-1]:.1f}", flush=True)
                wall = time.monotonic() - started
                page.get_by_role("button", name="Finish answer").click()
                finished = time.monotonic()
                wait_text(page, "Session summary", 600)
                browser.close()
                # A long answer may still be finishing (tail, metrics, grade) after the page moved on:
                # the app (and its workers) must stay up until it is stored.
                answers = pymongo.MongoClient(server.uri)[db_name].answers
                deadline = time.monotonic() + 900
                while time.monotonic() < deadline:
                    answer = answers.find_one({})
                    if answer and "capture" in answer:
                        break
                    time.sleep(1)
                stored_after = time.monotonic() - finished
        finally:
            server.stop()
            log = tmp / "app" / "streamlit.log"
            if log.exists():  # kept for a look after the run
                shutil.copy(log, Path(tempfile.gettempdir()) / f"soak_app_{db_name}.log")
    cap = answer["capture"]
    return {
        "wall": wall, "frames": cap["frames_seen"], "sampled": cap["frames_sampled"], "dropped": cap["frames_dropped"],
        "audio_cb": cap["audio_seconds"], "audio_stored": answer["audio_seconds"],
        "video_cpu_p99": cap["video_cpu_p99_ms"], "video_p99": cap["video_p99_ms"],
        "copy_p99": cap.get("copy_p99_ms") or float("nan"), "copy_cpu_p99": cap.get("copy_cpu_p99_ms") or float("nan"),
        "audio_cpu_p99": cap["audio_cpu_p99_ms"], "audio_p99": cap["audio_p99_ms"], "words": len(answer["words"]),
        "reanchors": f"{cap['video_reanchors']}/{cap['audio_reanchors']}", "load": sum(load) / max(1, len(load)),
        "stored_after": stored_after,
    }


ROWS = [
    ("wall time recording (s)", "wall", ".1f"),
    ("frames received by the video callback", "frames", "d"),
    ("frames handed to the emotion worker (ring)", "sampled", "d"),
    ("audio received by the callback (s)", "audio_cb", ".1f"),
    ("audio stored with the answer (s)", "audio_stored", ".1f"),
    ("video callback p99 per frame, thread CPU time (ms)", "video_cpu_p99", ".3f"),
    ("video callback p99 per frame, wall time incl. GIL/CPU waits (ms)", "video_p99", ".3f"),
    ("copier thread p99 per sampled frame (convert + copy into the ring), CPU (ms)", "copy_cpu_p99", ".3f"),
    ("copier thread p99 per sampled frame, wall (ms)", "copy_p99", ".3f"),
    ("audio callback p99 per frame, thread CPU time (ms)", "audio_cpu_p99", ".3f"),
    ("audio callback p99 per frame, wall time (ms)", "audio_p99", ".3f"),
    ("words transcribed", "words", "d"),
    ("finish to answer stored (s, +-1 s poll)", "stored_after", ".0f"),
    ("clock re-anchors (video/audio)", "reanchors", "s"),
    ("mean load average during the answer", "load", ".1f"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--compare", action="store_true",
                    help="also run the same answer with the old scheduling (emotion worker at normal priority, 5 ms switch)")
    args = ap.parse_args()
    runs = {"MockAI (emotion worker nice 10, 1 ms switch)": soak(args.minutes)}
    if args.compare:
        runs["before (emotion worker nice 0, 5 ms switch)"] = soak(args.minutes, BASELINE_ENV)
    names = list(runs)
    print()
    print(f"| {args.minutes:g}-minute live answer, every frame sampled (sidecar saturated) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for label, key, fmt in ROWS:
        print(f"| {label} | " + " | ".join(format(runs[n][key], fmt) for n in names) + " |")
    for n in names:
        lost = runs[n]["audio_cb"] - runs[n]["audio_stored"]
        print(f"\n{n}: audio lost between callback and storage: {lost:.2f} s")
    if args.compare:
        a, b = (runs[n] for n in names)
        print(f"\nvideo wall p99 ratio before/now: {b['video_p99'] / a['video_p99']:.1f}x; "
              f"audio: {b['audio_p99'] / a['audio_p99']:.1f}x")


if __name__ == "__main__":
    main()
