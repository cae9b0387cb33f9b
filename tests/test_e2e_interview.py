"""End to end: the real app, Debian's Chromium with a fake camera and microphone fed from
../shared/data, a candidate answering two questions, everything checked in MongoDB."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path

import pymongo
import pytest
from playwright.sync_api import Page, sync_playwright

from tests.browser import launch_chromium, running_app

WEBRTC_IFRAME = 'iframe[title*="streamlit_webrtc"]'


def make_fake_media(shared_data: Path, out: Path) -> tuple[Path, Path]:
    """A 640x480 .y4m from the webcam clip and a 48 kHz .wav of speech (Chromium loops both)."""
    out.mkdir(parents=True, exist_ok=True)
    video, audio = out / "camera.y4m", out / "mic.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(shared_data / "video" / "baseline.mp4"),
                    "-vf", "scale=640:480,fps=30", "-pix_fmt", "yuv420p", str(video)], check=True)
    # jfk.flac then a second of silence, so the loop has a natural pause between repeats.
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(shared_data / "speech" / "jfk.flac"),
                    "-af", "apad=pad_dur=1", "-ar", "48000", "-ac", "1", str(audio)], check=True)
    return video, audio


def fake_media_args(video: Path, audio: Path) -> list[str]:
    return ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video}", f"--use-file-for-fake-audio-capture={audio}",
            "--autoplay-policy=no-user-gesture-required"]


def shot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"e2e_{name}.png"), full_page=True)


def wait_text(page: Page, pattern: str, timeout_s: float = 60) -> re.Match:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = re.search(pattern, page.inner_text("body"))
        if m:
            return m
        page.wait_for_timeout(250)
    raise AssertionError(f"{pattern!r} did not appear; page says:\n{page.inner_text('body')[-2000:]}")


def start_media(page: Page) -> None:
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


@pytest.mark.e2e
@pytest.mark.slow
def test_candidate_answers_two_questions(tmp_path, shared_data, mongo_uri, artifacts):
    video, audio = make_fake_media(shared_data, tmp_path / "media")
    db_name = f"e2e_{uuid.uuid4().hex[:8]}"
    env = {"MONGODB_URI": mongo_uri, "MOCKAI_DB_NAME": db_name, "MOCKAI_FLUSH_SECONDS": "1"}
    db = pymongo.MongoClient(mongo_uri)[db_name]
    report_lines = []
    with running_app(tmp_path / "app", env=env) as app, sync_playwright() as p:
        browser = launch_chromium(p, fake_media_args(video, audio))
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(app.url)
        wait_text(page, "Analysis engine ready", 240)  # models warm before the first answer
        page.get_by_text("I understand and agree").click()
        page.get_by_role("button", name="Continue").click()
        shot(page, artifacts, "1_consent_done")

        page.get_by_label("Your name").fill("Ada Lovelace")
        page.get_by_label("Your name").press("Enter")
        page.get_by_label("How many questions").fill("2")
        page.get_by_label("How many questions").press("Enter")
        page.wait_for_timeout(1000)
        shot(page, artifacts, "2_setup")
        page.get_by_role("button", name="Next").click()

        wait_text(page, "Device check")
        start_media(page)
        wait_text(page, "Face found", 60)
        wait_text(page, "Microphone is picking up sound", 60)
        shot(page, artifacts, "3_device_check")
        page.get_by_role("button", name="Start the interview").click()

        for n in (1, 2):
            wait_text(page, f"Question {n} of 2")
            page.get_by_role("button", name="Start answer").click()
            wait_text(page, r"Live transcript:.*\b(country|Americans|fellow)\b", 60)
            page.wait_for_timeout(12_000)  # the candidate keeps talking
            shot(page, artifacts, f"4_answer{n}_live")
            frames_text = wait_text(page, r"frames received: (\d+)").group(1)
            finish = time.monotonic()
            page.get_by_role("button", name="Finish answer").click()
            wait_text(page, "Feedback:", 90)
            feedback_s = time.monotonic() - finish
            shot(page, artifacts, f"5_answer{n}_feedback")
            report_lines.append((n, int(frames_text), feedback_s))

        wait_text(page, "Session summary")
        shot(page, artifacts, "6_summary")
        browser.close()

        # Everything is in MongoDB, aligned on one clock.
        deadline = time.time() + 30
        while time.time() < deadline and db.sessions.count_documents({"status": "complete"}) < 1:
            time.sleep(0.5)
        session = db.sessions.find_one({"candidate": "Ada Lovelace"})
        assert session and session["status"] == "complete"
        answers = list(db.answers.find({"session_id": session["_id"]}).sort("index", 1))
        assert [a["index"] for a in answers] == [0, 1]
        print()
        for (n, frames_received, feedback_s), a in zip(report_lines, answers, strict=True):
            assert a["status"] == "complete" and a["words"], a
            text = a["transcript"].lower()
            assert "country" in text or "americans" in text, a["transcript"]
            frames = list(db.frames.find({"answer_id": a["_id"]}).sort("t", 1))
            assert frames, "frame samples stored"
            lo, hi = a["started_ms"] - 500, a["ended_ms"] + 500
            assert all(lo <= f["t"] <= hi for f in frames), "frames on the answer's clock"
            assert all(lo <= w["t_ms"] <= hi for w in a["words"]), "words on the same clock"
            assert sum(f["face"] for f in frames) / len(frames) >= 0.8
            print(f"answer {n}: frames received {frames_received}, sampled frames analysed {len(frames)}, "
                  f"words {len(a['words'])}, finish->feedback {feedback_s:.2f}s, transcript: {a['transcript']!r}")
    pymongo.MongoClient(mongo_uri).drop_database(db_name)
