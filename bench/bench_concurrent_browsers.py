"""Finish -> feedback for K candidates answering at once in real Chromium, on one node whose stated capacity is K.

    python bench/bench_concurrent_browsers.py [--seconds 12] [--ks 1,2] [--rounds 1] [--env KEY=VALUE ...]

The app (``streamlit run app.py``, with both workers it starts) is pinned to cpu 0 by CPU affinity. Its stated
capacity therefore comes from one core: floor(1 / ``cores_per_live_session``) = 2 at the default 0.5. Chromium
(one browser, a context per candidate, fake 30 fps 640x480 camera and the jfk.flac microphone), Playwright and
SecantusDB run on cpu 1 with this bench, so the node's figures are its own. For each K the bench starts a fresh app.
Each candidate passes the device check and starts an answer. Once every candidate has ``--seconds`` of audio
captured, all click "Finish answer" one after the other, within a few hundred ms. The bench then polls each page
until its feedback appears.

It prints, per candidate, finish -> feedback (from that candidate's own click) and the sidebar's
"Live sessions on this server: n / c" seen with every candidate in. It also prints the CPU seconds of the app
process and of each worker between the first click and the last feedback: where the node's core went.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_live_session import (  # noqa: E402
    APP_CPU,
    BROWSER_CPU,
    allowed_cpus,
    make_fake_media,
    pinned,
    role,
    snapshot,
)
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

SLOTS = r"Live sessions on this server: (\d+) / (\d+)"


def concurrent_answers(k: int, media: tuple[Path, Path], mongo_uri: str, seconds: float,
                       work: Path, extra_env: dict[str, str]) -> dict[str, Any]:
    """A fresh app pinned to one core; k candidates answer at once; each one's finish -> feedback."""
    from playwright.sync_api import sync_playwright

    env = {"MONGODB_URI": mongo_uri, "MOCKAI_DB_NAME": f"bench_{uuid.uuid4().hex[:8]}", "MOCKAI_FLUSH_SECONDS": "1",
           **extra_env}
    with ExitStack() as stack:
        with pinned(APP_CPU):  # the app and every worker it starts inherit cpu 0
            app = stack.enter_context(running_app(work / uuid.uuid4().hex[:8], env=env, timeout=240))
        p = stack.enter_context(sync_playwright())  # this process is on cpu 1: so are the driver and Chromium
        browser = launch_chromium(p, fake_media_args(*media))
        stack.callback(browser.close)
        pages = []
        for i in range(k):
            page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
            page.goto(app.url)
            go_to_interview(page, work, f"Bench Candidate {i + 1}", 1)
            pages.append(page)
        slots = wait_text(pages[-1], SLOTS)
        for page in pages:
            page.get_by_role("button", name="Start answer").click()
        starts = []
        for page in pages:
            wait_text(page, "Live transcript:")
            starts.append(answer_audio_seconds(page))
        captured = [wait_answer_audio(page, a0 + seconds, timeout_s=seconds * 6 + 60) - a0
                    for page, a0 in zip(pages, starts, strict=True)]
        procs0, _ = snapshot(app.process.pid)
        finish: list[float] = []
        for page in pages:
            finish.append(time.monotonic())
            page.get_by_role("button", name="Finish answer").click()
        feedback: dict[int, float] = {}
        deadline = time.monotonic() + 180
        while len(feedback) < k and time.monotonic() < deadline:
            for i, page in enumerate(pages):
                if i not in feedback and re.search("Feedback:", page.inner_text("body")):
                    feedback[i] = time.monotonic() - finish[i]
            if len(feedback) < k:
                pages[0].wait_for_timeout(100)
        procs1, _ = snapshot(app.process.pid)
        window = time.monotonic() - finish[0]
        # where the node's one core went between the first Finish click and the last feedback
        busy: dict[str, float] = {}
        for pid, cpu in procs1.items():
            r = role(pid, app.process.pid)
            busy[r] = busy.get(r, 0.0) + cpu - procs0.get(pid, 0.0)
        pins = {"app": allowed_cpus(app.process.pid)}
    return {"feedback_s": [feedback.get(i) for i in range(k)], "captured_s": captured,
            "finish_spread_s": finish[-1] - finish[0], "slots": (int(slots.group(1)), int(slots.group(2))),
            "pins": pins, "window_s": window, "busy_s": busy}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12.0, help="seconds of answer audio each candidate captures")
    ap.add_argument("--ks", default="1,2", help="comma list of how many candidates answer at once")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the app (repeatable)")
    args = ap.parse_args()
    extra_env = dict(kv.split("=", 1) for kv in args.env)
    os.sched_setaffinity(0, {BROWSER_CPU})  # this process, the database and Chromium: off the app's core
    load = os.getloadavg()
    ks = [int(k) for k in args.ks.split(",") if k.strip()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        media = make_fake_media(work / "media")
        server = EmbeddedServer(work / "db").start()
        try:
            for _ in range(args.rounds):
                for k in ks:
                    rows.append((k, concurrent_answers(k, media, server.uri, args.seconds, work, extra_env)))
                    print(f"K={k}: done", file=sys.stderr)
        finally:
            server.stop()
    print(f"app environment {extra_env or 'defaults'}; {args.seconds:g} s of captured audio per answer, Chromium fake 30 fps 640x480 camera + jfk.flac; "
          f"load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; app tree pinned to cpu {APP_CPU} "
          f"(measured: {rows[0][1]['pins']['app']}), Chromium + Playwright + SecantusDB + bench on cpu {BROWSER_CPU}")
    print()
    print("| K at once | sidebar, every candidate in | finish → feedback per candidate (s) | worst (s) "
          "| finish clicks spread (s) | CPU s from the first finish to the last feedback: app / emotion / speech |")
    print("|---:|---|---|---:|---:|---|")
    for k, r in rows:
        fb = r["feedback_s"]
        cells = ", ".join("none in 180 s" if v is None else f"{v:.2f}" for v in fb)
        worst = "—" if any(v is None for v in fb) else f"{max(fb):.2f}"
        n, c = r["slots"]
        b = r["busy_s"]
        cpu = " / ".join(f"{b.get(x, 0.0):.2f}" for x in ("app", "emotion", "speech"))
        print(f"| {k} | {n} / {c} | {cells} | {worst} | {r['finish_spread_s']:.2f} | {cpu} over {r['window_s']:.2f} s |")


if __name__ == "__main__":
    main()
