"""One clock, measured end to end: a clip with flashes and beeps at the same instants goes
through Chromium's fake devices, WebRTC, the callbacks and the sidecar; the stored frame
brightness and audio energy must put each flash and its beep at the same epoch time."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pymongo
import pytest
from playwright.sync_api import sync_playwright

from tests.browser import (
    fake_media_args,
    go_to_interview,
    launch_chromium,
    running_app,
    shot,
    wait_answer_audio,
    wait_text,
)

LOOP_S = 4.0
EVENTS_S = (1.0, 3.0)  # flash + beep at these instants of each 4 s loop
EVENT_LEN_S = 0.3


def make_sync_clip(out: Path) -> tuple[Path, Path]:
    """A 30 fps .y4m (dark, white flashes) and a 48 kHz .wav (silence, 1 kHz beeps), same loop length."""
    out.mkdir(parents=True, exist_ok=True)
    video, audio = out / "flash.y4m", out / "beep.wav"
    fps, w, h = 30, 640, 480
    with open(video, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(int(LOOP_S * fps)):
            t = i / fps
            flash = any(e <= t < e + EVENT_LEN_S for e in EVENTS_S)
            f.write(b"FRAME\n")
            f.write(bytes([235 if flash else 30]) * (w * h))
            f.write(bytes([128]) * (w * h // 2))
    rate = 48000
    t = np.arange(int(LOOP_S * rate)) / rate
    mask = np.zeros_like(t, bool)
    for e in EVENTS_S:
        mask |= (t >= e) & (t < e + EVENT_LEN_S)
    pcm = (np.sin(2 * np.pi * 1000 * t) * 0.5 * mask * 32767).astype("<i2")
    import wave

    with wave.open(str(audio), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(rate)
        wf.writeframes(pcm.tobytes())
    return video, audio


def onsets(t_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Times where a signal rises through the middle of its range (interpolated between samples)."""
    mid = (np.nanmin(values) + np.nanmax(values)) / 2
    up = np.flatnonzero((values[:-1] < mid) & (values[1:] >= mid))
    frac = (mid - values[up]) / (values[up + 1] - values[up])
    return t_ms[up] + frac * (t_ms[up + 1] - t_ms[up])


@pytest.mark.e2e
@pytest.mark.slow
def test_flash_and_beep_line_up(tmp_path, mongo_uri, artifacts):
    video, audio = make_sync_clip(tmp_path / "media")
    db_name = f"align_{uuid.uuid4().hex[:8]}"
    # Every frame sampled, so a flash onset is resolved to one frame (33 ms).
    env = {"MONGODB_URI": mongo_uri, "MOCKAI_DB_NAME": db_name, "MOCKAI_FLUSH_SECONDS": "1",
           "MOCKAI_FRAME_SAMPLE_EVERY": "1"}
    db = pymongo.MongoClient(mongo_uri)[db_name]
    with running_app(tmp_path / "app", env=env) as app, sync_playwright() as p:
        browser = launch_chromium(p, fake_media_args(video, audio))
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(app.url)
        go_to_interview(page, artifacts, "Alignment", 1)
        page.get_by_role("button", name="Start answer").click()
        wait_text(page, "Live transcript:")  # the live panel of this answer: its counts start at 0
        wait_answer_audio(page, 13.0)  # three loops and more: at least 3 flashes and 3 beeps recorded
        shot(page, artifacts, "Alignment_4_recording")
        page.get_by_role("button", name="Finish answer").click()
        wait_text(page, "Feedback:", 90)
        browser.close()

    answer = db.answers.find_one({})
    assert answer and answer["metrics"]["prosody"], answer
    frames = list(db.frames.find({"answer_id": answer["_id"]}, {"t": 1, "luma": 1}).sort("t", 1))
    ft = np.array([f["t"] for f in frames], float)
    luma = np.array([f["luma"] for f in frames], float)
    flashes = onsets(ft, luma)
    pros = answer["metrics"]["prosody"]
    at = answer["audio_started_ms"] + np.array(pros["t"], float) * 1000
    energy = np.array(pros["energy_db"], float)
    beeps = onsets(at, energy)
    assert len(flashes) >= 3 and len(beeps) >= 3, (flashes, beeps)
    errors = [float(b - flashes[np.argmin(np.abs(flashes - b))]) for b in beeps]
    errors = [e for e in errors if abs(e) < 1000]  # pair each beep with its own flash
    median = float(np.median(np.abs(errors)))
    print(f"\nflash/beep alignment over {len(errors)} events: median |error| {median:.0f} ms, "
          f"errors (beep - flash) ms: {[round(e) for e in errors]}; frames analysed {len(frames)}")
    pymongo.MongoClient(mongo_uri).drop_database(db_name)
    assert len(errors) >= 3
    assert median < 150, "alignment far off the 100 ms goal: the clocks are not on one time base"
