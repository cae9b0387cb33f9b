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
import re
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        server = EmbeddedServer(tmp / "db").start()
        db_name = f"soak_{uuid.uuid4().hex[:6]}"
        env = {"MONGODB_URI": server.uri, "MOCKAI_DB_NAME": db_name, "MOCKAI_FRAME_SAMPLE_EVERY": "1",
               "MOCKAI_STALE_ANSWER_SECONDS": "60"}
        video, audio = make_fake_media(DATA, tmp / "media")
        samples = []
        try:
            with running_app(tmp / "app", env=env) as app, sync_playwright() as p:
                browser = launch_chromium(p, fake_media_args(video, audio))
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.goto(app.url)
                go_to_interview(page, tmp, "Soak", 1)
                page.get_by_role("button", name="Start answer").click()
                started = time.monotonic()
                last = -1
                while time.monotonic() - started < args.minutes * 60:
                    page.wait_for_timeout(10_000)
                    body = page.inner_text("body")
                    m = re.search(r"frames received: (\d+) · sampled: (\d+) · audio: ([\d.]+) s", body)
                    assert m, body[-1500:]
                    frames, audio_s = int(m.group(1)), float(m.group(3))
                    assert frames > last, f"frames stopped arriving at {frames}"
                    assert page.frame_locator('iframe[title*="streamlit_webrtc"]').get_by_role(
                        "button", name=re.compile("STOP", re.I)).is_visible(), "connection dropped"
                    last = frames
                    samples.append((time.monotonic() - started, frames, audio_s))
                    print(f"t={samples[-1][0]:6.0f}s frames={frames} audio={audio_s:.1f}s", flush=True)
                wall = time.monotonic() - started
                page.get_by_role("button", name="Finish answer").click()
                wait_text(page, "Session summary", 600)
                browser.close()
            # A long answer may still be finishing (tail, metrics, grade) after the page moved on.
            answers = pymongo.MongoClient(server.uri)[db_name].answers
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                answer = answers.find_one({})
                if answer and "capture" in answer:
                    break
                time.sleep(2)
        finally:
            server.stop()
    cap = answer["capture"]
    print()
    print(f"| {args.minutes:.0f}-minute live answer, every frame sampled (sidecar saturated) | value |")
    print("|---|---:|")
    print(f"| wall time recording (s) | {wall:.1f} |")
    print(f"| frames received by the video callback | {cap['frames_seen']} |")
    print(f"| audio received by the callback (s) | {cap['audio_seconds']:.1f} |")
    print(f"| audio stored with the answer (s) | {answer['audio_seconds']:.1f} |")
    print(f"| video callback p99 per frame, thread CPU time (ms) | {cap['video_cpu_p99_ms']:.3f} |")
    print(f"| video callback p99 per frame, wall time incl. GIL/CPU waits (ms) | {cap['video_p99_ms']:.3f} |")
    print(f"| audio callback p99 per frame, thread CPU time (ms) | {cap['audio_cpu_p99_ms']:.3f} |")
    print(f"| audio callback p99 per frame, wall time (ms) | {cap['audio_p99_ms']:.3f} |")
    print(f"| words transcribed | {len(answer['words'])} |")
    print(f"| connection reanchors (video/audio) | {cap['video_reanchors']}/{cap['audio_reanchors']} |")
    lost = cap["audio_seconds"] - answer["audio_seconds"]
    print(f"\naudio lost between callback and storage: {lost:.2f} s")


if __name__ == "__main__":
    main()
