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

from tests.browser import (
    answer_audio_seconds,
    fake_media_args,
    go_to_interview,
    launch_chromium,
    running_app,
    shot,
    wait_answer_audio,
    wait_text,
)
from tests.waiting import wait_until


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
            # The candidate keeps talking: 12 s more of this answer's audio reach the app.
            wait_answer_audio(page, answer_audio_seconds(page) + 12)
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
        wait_until(lambda: db.sessions.count_documents({"status": "complete"}) >= 1, "the session stored complete", 60)
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
            # how far the first and last frames sit from the answer's start and end (ms), said on failure
            margins = (frames[0]["t"] - a["started_ms"], frames[-1]["t"] - a["ended_ms"])
            assert all(lo <= f["t"] <= hi for f in frames), f"frames on the answer's clock: {margins}"
            assert all(lo <= w["t_ms"] <= hi for w in a["words"]), "words on the same clock"
            assert sum(f["face"] for f in frames) / len(frames) >= 0.8
            print(f"answer {n}: first/last frame {margins[0]:+d}/{margins[1]:+d} ms from start/end, "
                  f"frames received {frames_received}, sampled frames analysed {len(frames)}, "
                  f"words {len(a['words'])}, finish->feedback {feedback_s:.2f}s, transcript: {a['transcript']!r}")
    pymongo.MongoClient(mongo_uri).drop_database(db_name)


@pytest.mark.e2e
@pytest.mark.slow
def test_reload_mid_answer_keeps_it_and_resumes(tmp_path, shared_data, mongo_uri, artifacts):
    video, audio = make_fake_media(shared_data, tmp_path / "media")
    db_name = f"e2e_{uuid.uuid4().hex[:8]}"
    env = {"MONGODB_URI": mongo_uri, "MOCKAI_DB_NAME": db_name, "MOCKAI_FLUSH_SECONDS": "1",
           "MOCKAI_STALE_ANSWER_SECONDS": "4"}
    db = pymongo.MongoClient(mongo_uri)[db_name]
    with running_app(tmp_path / "app", env=env) as app, sync_playwright() as p:
        browser = launch_chromium(p, fake_media_args(video, audio))
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(app.url)
        go_to_interview(page, artifacts, "Grace Reload", 1)
        page.get_by_role("button", name="Start answer").click()
        wait_text(page, r"Live transcript:.*\b(country|Americans|fellow)\b", 60)
        page.reload()  # the tab reloads mid-answer: the WebRTC connection drops
        # The interrupted answer is stored and marked incomplete.
        cut = wait_until(lambda: db.answers.find_one({"status": "incomplete"}), "the interrupted answer stored", 120)
        assert cut["words"], "what was said before the drop is kept"
        print(f"\ninterrupted answer kept as incomplete with {len(cut['words'])} words: {cut['transcript']!r}")

        page.get_by_text("I understand and agree").click()
        page.get_by_role("button", name="Continue").click()
        page.get_by_label("Your name").fill("Grace Reload")
        page.get_by_label("Your name").press("Enter")
        wait_text(page, "unfinished session")
        shot(page, artifacts, "Grace Reload_5_resume_offer")
        page.get_by_role("button", name="Resume that session").click()
        wait_text(page, "Device check")
        from tests.browser import start_media

        start_media(page)
        # As in go_to_interview: camera and microphone both flowing before the interview starts.
        wait_text(page, "Face found|No face found", 60)
        wait_text(page, "Microphone is picking up sound", 60)
        page.get_by_role("button", name="Start the interview").click()
        wait_text(page, "Question 1 of 1")
        page.get_by_role("button", name="Start answer").click()
        wait_text(page, r"Live transcript:.*\b(country|Americans|fellow)\b", 60)
        page.get_by_role("button", name="Finish answer").click()
        wait_text(page, "Session summary", 90)
        shot(page, artifacts, "Grace Reload_6_summary")
        browser.close()
    answers = list(db.answers.find({}).sort("started_ms", 1))
    assert [a["status"] for a in answers] == ["incomplete", "complete"]
    assert len({a["session_id"] for a in answers}) == 1, "the retry joined the same session"
    pymongo.MongoClient(mongo_uri).drop_database(db_name)


@pytest.mark.e2e
@pytest.mark.slow
def test_upload_a_recording(tmp_path, shared_data, mongo_uri, artifacts):
    clip = tmp_path / "answer.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(shared_data / "video" / "baseline.mp4"),
                    "-i", str(shared_data / "speech" / "jfk.flac"), "-map", "0:v", "-map", "1:a",
                    "-c:v", "libx264", "-preset", "ultrafast", "-vf", "scale=640:-2", "-c:a", "aac",
                    str(clip)], check=True)
    db_name = f"e2e_{uuid.uuid4().hex[:8]}"
    env = {"MONGODB_URI": mongo_uri, "MOCKAI_DB_NAME": db_name, "MOCKAI_FLUSH_SECONDS": "1",
           "MOCKAI_EMBEDDED_WORKERS": "1"}  # the upload is analysed by a background job
    db = pymongo.MongoClient(mongo_uri)[db_name]
    with running_app(tmp_path / "app", env=env) as app, sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(app.url)
        wait_text(page, "Analysis engine ready", 240)
        page.get_by_text("I understand and agree").click()
        page.get_by_role("button", name="Continue").click()
        page.get_by_label("Your name").fill("Upload Person")
        page.get_by_label("Your name").press("Enter")
        page.get_by_label("How many questions").fill("1")
        page.get_by_label("How many questions").press("Enter")
        page.get_by_text("Upload a recording").click()
        page.get_by_role("button", name="Next").click()
        wait_text(page, "Question 1 of 1")
        page.locator('input[type="file"]').set_input_files(str(clip))
        page.get_by_role("button", name="Analyse").click(timeout=60_000)
        wait_text(page, "Session summary", 180)
        shot(page, artifacts, "upload_summary")
        browser.close()
    answer = db.answers.find_one({})
    assert answer and answer["status"] == "complete" and "country" in answer["transcript"].lower()
    assert db.frames.count_documents({"answer_id": answer["_id"]}) >= 20
    pymongo.MongoClient(mongo_uri).drop_database(db_name)
