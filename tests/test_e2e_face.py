"""End to end for the landmark face signals (issue 12): a candidate answers live in Chromium with a
fake camera that shows the shared webcam clip looking into the camera, then the same clip with the
head tilted down (a perspective warp of the real frames), in a loop. The feedback after the answer
must tie the look-down to its time; the report page shows an eye-contact value and head-pose tracks."""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import cv2
import pymongo
import pytest
from playwright.sync_api import sync_playwright

from pipeline.media import iter_video_frames
from sidecar.face_geometry import rotate_face_image
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
from tests.test_e2e_report import sign_in
from tests.waiting import wait_until

ADMIN_PASSWORD = "e2e-face-admin-pass"
NAME = "Gaze Check"
LOOK_DOWN_DEG = 55.0  # a 3D warp reads as ~0.6 of its angle in head pitch on this squashed clip (30 deg read ~15)
GAZE_ADVICE = "looked down at (\\d+:\u2060?\\d\\d)\\s*[-–]\\s*(\\d+:\u2060?\\d\\d)"  # the page puts a word joiner after ":"


def make_look_down_media(shared_data: Path, out: Path) -> tuple[Path, Path]:
    """A 30 fps 640x480 .y4m: baseline.mp4 as recorded (into the camera), then the same frames
    warped to a head tilted LOOK_DOWN_DEG down; and a 48 kHz .wav of speech. Chromium loops both."""
    out.mkdir(parents=True, exist_ok=True)
    stills = out / "frames"
    stills.mkdir(exist_ok=True)
    frames = [cv2.resize(img, (640, 480)) for _, img in
              iter_video_frames(shared_data / "video" / "baseline.mp4", every_n=1, max_width=1920)]
    sequence = frames + [rotate_face_image(img, 0.0, LOOK_DOWN_DEG) for img in frames]
    for i, img in enumerate(sequence):
        cv2.imwrite(str(stills / f"{i:05d}.png"), img)
    video, audio = out / "camera.y4m", out / "mic.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-framerate", "30", "-i", str(stills / "%05d.png"),
                    "-pix_fmt", "yuv420p", str(video)], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(shared_data / "speech" / "jfk.flac"),
                    "-af", "apad=pad_dur=1", "-ar", "48000", "-ac", "1", str(audio)], check=True)
    return video, audio


def plot_traces(page: Any) -> list[dict[str, Any]]:
    return page.evaluate(
        "() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(g => g._fullData.map(t => ({"
        " name: String(t.name || ''), visible: t.visible,"
        " y: Array.from(t.y || []).filter(v => v !== null && !Number.isNaN(Number(v))).map(Number)})))")


@pytest.mark.e2e
@pytest.mark.slow
def test_look_down_is_tied_to_its_time_and_head_pose_is_on_the_report(tmp_path, shared_data, mongo_uri, artifacts):
    video, audio = make_look_down_media(shared_data, tmp_path / "media")
    db_name = f"e2e_face_{uuid.uuid4().hex[:8]}"
    env = {"MONGODB_URI": mongo_uri, "MOCKAI_DB_NAME": db_name, "MOCKAI_FLUSH_SECONDS": "1",
           "MOCKAI_ADMIN_PASSWORD": ADMIN_PASSWORD, "MOCKAI_FACE_DETECTOR": "mediapipe"}
    db = pymongo.MongoClient(mongo_uri)[db_name]
    try:
        with running_app(tmp_path / "app", env=env) as app, sync_playwright() as p:
            browser = launch_chromium(p, fake_media_args(video, audio))
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.goto(app.url)
            go_to_interview(page, artifacts, NAME, 1)
            page.get_by_role("button", name="Start answer").click()
            wait_text(page, r"Live transcript:.*\b(country|Americans|fellow)\b", 60)
            # 14 s of answer: the 7 s camera loop shows the look-down at least once, whole.
            wait_answer_audio(page, answer_audio_seconds(page) + 14)
            page.get_by_role("button", name="Finish answer").click()
            wait_text(page, "Feedback:", 90)
            advice = wait_text(page, GAZE_ADVICE, 60)
            shot(page, artifacts, "face_1_feedback_gaze_advice")
            feedback = page.inner_text("body")

            session = wait_until(lambda: db.sessions.find_one({"candidate": NAME}), "the session stored", 60)
            answer = wait_until(lambda: db.answers.find_one({"session_id": session["_id"], "status": "complete"}),
                                "the answer stored complete", 90)
            frames = list(db.frames.find({"answer_id": answer["_id"]}).sort("t", 1))

            page.goto(f"{app.url}/report?session={session['_id']}")
            sign_in(page, ADMIN_PASSWORD, artifacts)
            wait_text(page, NAME, 60)
            page.wait_for_function(
                "() => { const g = document.querySelector('.js-plotly-plot');"
                " return g && g._fullData && g._fullData.length > 0; }", timeout=60_000)
            report = page.inner_text("body")
            traces = plot_traces(page)
            page.set_viewport_size({"width": 1400, "height": 2600})
            page.locator(".js-plotly-plot").first.wait_for(state="visible")
            shot(page, artifacts, "face_2_report")
            assert page.locator('[data-testid="stException"]').count() == 0, report
            browser.close()
        assert "Traceback" not in app.log(), app.log()[-3000:]
    finally:
        db.client.drop_database(db_name)
        db.client.close()

    # What was stored: landmark gaze on every face frame, the look-down frames pitched down and off.
    faces = [f for f in frames if f["face"]]
    assert len(faces) >= 0.9 * len(frames) > 0, (len(faces), len(frames))
    assert all(f["gaze"]["method"] == "iris" for f in faces)
    down = [f for f in faces if (f["head"].get("pitch") or 0.0) > LOOK_DOWN_DEG / 2]
    level = [f for f in faces if abs(f["head"].get("pitch") or 99.0) < LOOK_DOWN_DEG / 4]
    assert down and level, [round(f["head"].get("pitch") or 0, 1) for f in faces]
    assert sum(f["gaze"]["eye_contact"] is False for f in down) >= 0.9 * len(down)
    # eye contact separates level from looking down: level frames read as eye contact far more often
    # (not all: "level" is head pitch only, and the iris of a half-tilted or squashed frame can read down)
    down_rate = sum(f["gaze"]["eye_contact"] is True for f in down) / len(down)
    level_rate = sum(f["gaze"]["eye_contact"] is True for f in level) / len(level)
    assert level_rate >= down_rate + 0.3, (level_rate, down_rate)

    # The advice's times fall on a stored look-down run (m:ss on the answer's clock).
    def secs(mmss: str) -> int:
        m, s = mmss.replace("\u2060", "").split(":")
        return int(m) * 60 + int(s)

    start_s, end_s = secs(advice.group(1)), secs(advice.group(2))
    down_s = [(f["t"] - answer["started_ms"]) / 1000.0 for f in down]
    assert end_s > start_s and any(start_s - 1 <= t <= end_s + 1 for t in down_s), (advice.group(0), down_s)
    assert "Eye contact" in feedback, feedback

    # The report: an eye-contact value and head-pose tracks with points.
    eye = re.search(r"Eye contact(?: · \w+)?\s*(\d+)%", report)
    assert eye, report[-3000:]
    names = {t["name"] for t in traces if t["visible"] is not False and t["y"]}
    assert any(re.search("eye contact", n, re.I) for n in names), names
    yaw = [t for t in traces if re.search(r"head yaw", t["name"], re.I) and t["y"]]
    pitch = [t for t in traces if re.search(r"head pitch", t["name"], re.I) and t["y"]]
    assert yaw and pitch, sorted(names)
    assert max(pitch[0]["y"]) > LOOK_DOWN_DEG / 2, pitch[0]["y"]
    print(f"\nfeedback: {advice.group(0)!r}; report eye contact {eye.group(1)}%, "
          f"head pitch track {min(pitch[0]['y']):.0f}..{max(pitch[0]['y']):.0f} deg; "
          f"{len(faces)}/{len(frames)} face frames, {len(down)} looking down")
