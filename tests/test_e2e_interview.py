"""End to end: the real app, Debian's Chromium with a fake camera and microphone fed from
../shared/data, a candidate answering two questions, everything checked in MongoDB."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pymongo
import pytest
from playwright.sync_api import sync_playwright

from tests.browser import fake_media_args, go_to_interview, launch_chromium, running_app, shot, wait_text


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
        go_to_interview(page, artifacts, "Ada Lovelace", 2)

        for n in (1, 2):
            wait_text(page, f"Question {n} of 2")
            page.get_by_role("button", name="Start answer").click()
            wait_text(page, r"Live transcript:.*\b(country|Americans|fellow)\b", 60)
            page.wait_for_timeout(12_000)  # the candidate keeps talking
            shot(page, artifacts, f"Ada Lovelace_4_answer{n}_live")
            frames_text = wait_text(page, r"frames received: (\d+)").group(1)
            finish = time.monotonic()
            page.get_by_role("button", name="Finish answer").click()
            wait_text(page, "Feedback:", 90)
            feedback_s = time.monotonic() - finish
            shot(page, artifacts, f"Ada Lovelace_5_answer{n}_feedback")
            report_lines.append((n, int(frames_text), feedback_s))

        wait_text(page, "Session summary")
        shot(page, artifacts, "Ada Lovelace_6_summary")
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
