"""Helpers for the end-to-end tests: the real app in a subprocess, Debian's Chromium via Playwright."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.storage import free_port

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
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
def running_app(data_dir: Path, env: dict[str, str] | None = None, timeout: float = 120) -> Iterator[RunningApp]:
    """``streamlit run app.py`` headless on a free port; yields once /_stcore/health answers ok."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    full_env.update({"MOCKAI_DATA_DIR": str(data_dir), **(env or {})})
    log_path = data_dir / "streamlit.log"
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
