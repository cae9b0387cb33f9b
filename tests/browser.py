"""Helpers for the end-to-end tests: the real app in a subprocess, Debian's Chromium via Playwright."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.storage import free_port

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
WEBRTC_IFRAME = 'iframe[title*="streamlit_webrtc"]'
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@dataclass
class RunningApp:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_app(data_dir: Path, env: dict[str, str] | None = None, timeout: float = 120, *, port: int | None = None,
                log_name: str = "streamlit.log") -> Iterator[RunningApp]:
    """``streamlit run app.py`` headless on ``port`` (default a free one); yields once /_stcore/health
    answers ok. Several apps may share ``data_dir`` (nodes on one machine), each with its own log."""
    port = port or free_port()
    full_env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    full_env.update({"MOCKAI_DATA_DIR": str(data_dir), "MOCKAI_HEALTH_PORT": str(free_port()), **(env or {})})
    log_path = data_dir / log_name
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--runner.fastReruns", "false"],
            cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    app = RunningApp(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early:\n{app.log()}")
            try:
                with urllib.request.urlopen(f"{app.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit not healthy in {timeout}s:\n{app.log()}")
            time.sleep(0.3)
        yield app
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def launch_chromium(playwright, extra_args: list[str] | None = None, user_data_dir: Path | None = None):
    args = CHROMIUM_ARGS + (extra_args or [])
    if user_data_dir is not None:
        return playwright.chromium.launch_persistent_context(
            str(user_data_dir), executable_path=CHROMIUM, args=args, headless=True
        )
    return playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)


def fake_media_args(video: Path, audio: Path) -> list[str]:
    return ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video}", f"--use-file-for-fake-audio-capture={audio}",
            "--autoplay-policy=no-user-gesture-required"]


def shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"e2e_{name}.png"), full_page=True)


def wait_text(page: Any, pattern: str, timeout_s: float = 60) -> re.Match:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = re.search(pattern, page.inner_text("body"))
        if m:
            return m
        page.wait_for_timeout(250)
    raise AssertionError(f"{pattern!r} did not appear; page says:\n{page.inner_text('body')[-2000:]}")


AUDIO_CAPTION = r"audio: (\d+(?:\.\d+)?) s"  # the live panel's count of this answer's audio


def answer_audio_seconds(page: Any, timeout_s: float = 60) -> float:
    """Seconds of audio the app has captured for the current answer, as its live panel says."""
    return float(wait_text(page, AUDIO_CAPTION, timeout_s).group(1))


def wait_answer_audio(page: Any, seconds: float, timeout_s: float = 180) -> float:
    """Wait until the app has captured ``seconds`` of the current answer's audio (not a fixed sleep:
    a loaded machine delivers the fake microphone slower, and the test needs the audio, not the time)."""
    deadline = time.monotonic() + timeout_s
    got = None
    while time.monotonic() < deadline:
        m = re.search(AUDIO_CAPTION, page.inner_text("body"))
        got = float(m.group(1)) if m else None
        if got is not None and got >= seconds:
            return got
        page.wait_for_timeout(250)
    raise AssertionError(f"{seconds:g} s of answer audio not captured (last count {got}); page says:\n"
                         f"{page.inner_text('body')[-2000:]}")


def wait_script_done(page: Any, timeout_s: float = 60) -> None:
    """Wait until Streamlit reports the script run finished (the attribute its own e2e tests use)."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
        state="attached", timeout=timeout_s * 1000)


def start_media(page: Any) -> None:
    """Press START in the webrtc component; wait on frames arriving, retry once (MODELS.md race)."""
    for attempt in range(2):
        frame = page.frame_locator(WEBRTC_IFRAME)
        frame.get_by_role("button", name=re.compile("START", re.I)).click(timeout=60_000)
        try:
            wait_text(page, r"frames received: [1-9]\d*", 30)
            return
        except AssertionError:
            if attempt:
                raise
            page.reload()
            page.wait_for_timeout(3000)


def go_to_interview(page: Any, artifacts: Path, name: str, questions: int) -> None:
    """Consent, pick the first question set with ``questions`` questions, pass the device check."""
    wait_text(page, "Analysis engine ready", 240)  # models warm before the first answer
    page.get_by_text("I understand and agree").click()
    page.get_by_role("button", name="Continue").click()
    shot(page, artifacts, f"{name}_1_consent_done")
    page.get_by_label("Your name").fill(name)
    page.get_by_label("Your name").press("Enter")
    page.get_by_label("How many questions").fill(str(questions))
    page.get_by_label("How many questions").press("Enter")
    page.wait_for_timeout(1000)
    shot(page, artifacts, f"{name}_2_setup")
    page.get_by_role("button", name="Next").click()
    wait_text(page, "Device check")
    start_media(page)
    wait_text(page, "Face found|No face found", 60)
    wait_text(page, "Microphone is picking up sound", 60)
    shot(page, artifacts, f"{name}_3_device_check")
    page.get_by_role("button", name="Start the interview").click()
    wait_text(page, f"Question 1 of {questions}")
