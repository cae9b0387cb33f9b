"""End to end through the job queue: the real app with its embedded Redis and one embedded Celery worker,
Chromium uploading a real recording made from ../shared/data, a reload while the job runs, the feedback."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pymongo
import pytest
from playwright.sync_api import sync_playwright

from pipeline import jobs
from tests.browser import launch_chromium, running_app, shot, wait_script_done
from tests.waiting import wait_until

# What the progress widget says while a job is waiting or running (pipeline.jobs.STAGES).
ACTIVE_STAGES = {k: v for k, v in jobs.STAGES.items() if k not in ("done", "failed", "cancelled")}
FEEDBACK = r"Feedback:.*?Grade[^\n]*\n\s*(\d+)%"  # the card's grade tile: "Grade · band" then "NN%"
POLL_S = 0.25  # how often the page text is read (each read is a round trip to Chromium)


def make_clip(shared_data: Path, out: Path) -> Path:
    """An 11 s answer: the webcam clip looped under jfk.flac (a real face, real speech), 640 px wide."""
    clip = out / "answer.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-stream_loop", "-1",
                    "-i", str(shared_data / "video" / "baseline.mp4"), "-i", str(shared_data / "speech" / "jfk.flac"),
                    "-map", "0:v", "-map", "1:a", "-shortest", "-c:v", "libx264", "-preset", "ultrafast",
                    "-vf", "scale=640:-2", "-c:a", "aac", str(clip)], check=True)
    return clip


class PageWatch:
    """Reads the page and notes every job stage its progress widget shows, in the order first seen."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.stages: list[str] = []

    def stage_shown(self) -> str | None:
        """The stage the progress widget names now (None when no job progress is on the page)."""
        texts = " ".join(self.page.locator('[data-testid="stProgress"]').all_inner_texts())
        shown = next((label for label in ACTIVE_STAGES.values() if label in texts), None)
        if shown is not None and shown not in self.stages:
            self.stages.append(shown)
        return shown

    def text(self) -> str:
        self.stage_shown()
        return str(self.page.inner_text("body"))

    def wait(self, pattern: str, what: str, timeout: float) -> re.Match[str]:
        found: re.Match[str] = wait_until(lambda: re.search(pattern, self.text(), re.S), what, timeout,
                                          every=POLL_S)
        return found


@pytest.mark.e2e
@pytest.mark.jobs
def test_upload_through_the_queue_survives_a_reload(tmp_path, shared_data, mongo_uri, artifacts):
    clip = make_clip(shared_data, tmp_path)
    db_name = f"e2e_jobs_{uuid.uuid4().hex[:8]}"
    env = {"MONGODB_URI": mongo_uri, "MOCKAI_DB_NAME": db_name, "MOCKAI_FLUSH_SECONDS": "1",
           "MOCKAI_JOB_HEARTBEAT_SECONDS": "1", "MOCKAI_EMBEDDED_WORKERS": "1"}
    db = pymongo.MongoClient(mongo_uri)[db_name]
    with running_app(tmp_path / "app", env=env) as app, sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        watch = PageWatch(page)
        page.goto(app.url)
        page.get_by_text("I understand and agree").click()
        page.get_by_role("button", name="Continue").click()
        page.get_by_label("Your name").fill("Queue Person")
        page.get_by_label("Your name").press("Enter")
        page.get_by_label("How many questions").fill("1")
        page.get_by_label("How many questions").press("Enter")
        page.get_by_text("Upload a recording").click()
        page.get_by_role("button", name="Next").click()
        watch.wait("Question 1 of 1", "the upload step", 120)
        page.locator('input[type="file"]').set_input_files(str(clip))
        page.get_by_role("button", name="Analyse").click(timeout=60_000)
        submitted = time.monotonic()

        # The page returns at once: the job's progress, no uploader for this question meanwhile.
        first = wait_until(watch.stage_shown, "a job stage on the page", 120, every=POLL_S)
        wait_script_done(page)  # the run that drew the progress has also removed the uploader
        assert page.locator('input[type="file"]').count() == 0, "no uploader while the job runs"
        assert page.get_by_role("button", name="Cancel").count() == 1
        shot(page, artifacts, "jobs_1_progress")
        job = db.jobs.find_one({})
        assert job is not None and job["status"] in jobs.ACTIVE, job
        session_id = job["session_id"]

        # A reload (the same URL, with its ?resume= token): the step finds the job again in MongoDB.
        url = page.url
        assert "resume=" in url, url
        page.goto(url)
        page.get_by_text("I understand and agree").click()
        page.get_by_role("button", name="Continue").click()
        watch.wait("unfinished session", "the resume offer", 120)
        page.get_by_role("button", name="Resume that session").click()
        resumed_on = wait_until(lambda: watch.stage_shown() or (re.search(FEEDBACK, watch.text(), re.S) and "feedback"),
                                "the job's progress or its feedback after the resume", 120, every=POLL_S)
        shot(page, artifacts, "jobs_2_resumed")

        grade = int(watch.wait(FEEDBACK, "the feedback with a grade", 600).group(1))
        feedback_s = time.monotonic() - submitted
        watch.wait("Session summary", "the session summary", 60)
        shot(page, artifacts, "jobs_3_feedback")
        browser.close()

    answers = list(db.answers.find({"session_id": session_id, "index": 0}))
    assert len(answers) == 1, [(a["_id"], a.get("status")) for a in answers]
    answer = answers[0]
    assert answer["status"] == "complete" and "country" in answer["transcript"].lower(), answer.get("transcript")
    assert 0 <= grade <= 100
    done = list(db.jobs.find({"session_id": session_id, "index": 0}))
    assert [j["status"] for j in done] == [jobs.DONE], done
    assert done[0]["answer_id"] == answer["_id"] and done[0]["attempts"] == 1
    assert db.frames.count_documents({"answer_id": answer["_id"]}) >= 10, "the video's frame samples stored"
    assert db["job_inputs.files"].count_documents({}) == 0, "the recording's queued copy removed once done"
    print(f"\nfirst stage shown: {first!r}; stages seen: {watch.stages}; after the reload: {resumed_on!r}; "
          f"grade {grade}%; upload->feedback {feedback_s:.1f}s; job history: "
          f"{[h['event'] for h in done[0]['history']]}")
    pymongo.MongoClient(mongo_uri).drop_database(db_name)
