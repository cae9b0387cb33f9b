"""End to end: a session analysed from ../shared/data by the real pipeline (``python -m sidecar
analyze --store``), opened on the Session report page of the real app in Debian's Chromium,
and the rendered Plotly figure inspected in the browser: every track on one shared time axis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pymongo
import pytest
from playwright.sync_api import sync_playwright

from pipeline.schemas import EMOTIONS
from tests.browser import ROOT, launch_chromium, running_app, shot, wait_text

ADMIN_PASSWORD = "e2e-report-admin-pass"
QUESTION = "What did President Kennedy ask of his fellow Americans?"
REFERENCE = "Ask not what your country can do for you, ask what you can do for your country."
KEY_POINTS = ("ask what you can do for your country", "the moon landing")
AUDIO_SECONDS = 11.0  # jfk.flac
VIDEO_SECONDS = 3.48  # baseline.mp4

# Everything the test reads off the rendered chart, in one round trip.
FIGURE_JS = """() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  return plots.map(gd => {
    const fl = gd._fullLayout;
    const axes = {};
    for (const key of Object.keys(fl)) {
      if (!/^[xy]axis\\d*$/.test(key)) continue;
      const a = fl[key];
      axes[key] = {id: a._id, anchor: a.anchor, matches: a.matches || null, overlaying: a.overlaying || null,
                   range: a.range, title: (a.title && a.title.text) || '',
                   rangeslider: a.rangeslider ? {visible: !!a.rangeslider.visible, range: a.rangeslider.range}
                                              : null};
    }
    const traces = gd._fullData.map(t => ({
      name: t.name, type: t.type, xaxis: t.xaxis, yaxis: t.yaxis, visible: t.visible,
      x: Array.from(t.x || []).filter(v => v !== null && v !== undefined && !Number.isNaN(Number(v))).map(Number),
      text: Array.isArray(t.text) ? t.text.filter(s => s !== null) : [],
    }));
    const shownWords = [...gd.querySelectorAll('.textpoint text')].map(n => n.textContent);
    return {traces, axes, shownWords, width: gd.clientWidth, height: gd.clientHeight};
  });
}"""


def analyse_into(env: dict[str, str], shared_data: Path) -> dict[str, Any]:
    """The real pipeline on JFK's speech and a webcam clip, stored in the database ``env`` names."""
    cmd = [sys.executable, "-m", "sidecar", "analyze",
           "--audio", str(shared_data / "speech" / "jfk.flac"),
           "--video", str(shared_data / "video" / "baseline.mp4"),
           "--question", QUESTION, "--reference", REFERENCE,
           *(arg for kp in KEY_POINTS for arg in ("--key-point", kp)),
           "--candidate", "JFK Report", "--role", "speech", "--store", "--json"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"analyze failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    start = done.stdout.find("{\n")  # anything a library printed before the JSON is skipped
    assert start >= 0, done.stdout[-3000:]
    return json.loads(done.stdout[start:])


def sign_in(page: Any, password: str, artifacts: Path) -> None:
    """Fill the app's sign-in form (ui/session.py) as the admin MOCKAI_ADMIN_PASSWORD created."""
    wait_text(page, "Sign in to see this page", 90)
    page.get_by_label("Username", exact=True).fill("admin")
    page.get_by_label("Password", exact=True).fill(password)
    shot(page, artifacts, "report_1_sign_in")
    page.get_by_role("button", name="Sign in").click()


def chart_shot(page: Any, artifacts: Path, name: str) -> None:
    page.locator(".js-plotly-plot").first.screenshot(path=str(artifacts / f"e2e_{name}.png"))


@pytest.mark.e2e
@pytest.mark.slow
def test_report_figure_has_every_track_on_one_time_axis(tmp_path, shared_data, mongo_uri, artifacts):
    db_name = f"e2e_report_{uuid.uuid4().hex[:8]}"
    # The analysis and the app share one database: the tests' server (or MONGODB_URI), one fresh db.
    env = {"MONGODB_URI": mongo_uri, "MOCKAI_DB_NAME": db_name, "MOCKAI_FLUSH_SECONDS": "1"}
    cli_env = {**os.environ, **env, "MOCKAI_DATA_DIR": str(tmp_path / "cli")}
    report = analyse_into(cli_env, shared_data)
    session_id = report["session_id"]
    assert "Americans" in report["transcript"], report["transcript"]
    assert report["frames_summary"]["with_face"] > 0, report["frames_summary"]

    db = pymongo.MongoClient(mongo_uri)[db_name]
    try:
        answer = db.answers.find_one({"session_id": session_id})
        assert answer and answer["status"] == "complete" and answer["words"], answer
        assert db.frames.count_documents({"answer_id": answer["_id"]}) > 0

        # A coach-only server: no analysis engine to warm, the admin account made from the env.
        app_env = {**env, "MOCKAI_ADMIN_PASSWORD": ADMIN_PASSWORD, "MOCKAI_SIDECAR_ENABLED": "false"}
        with running_app(tmp_path / "app", env=app_env) as app, sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # The deep link is the server's very first request: it must still open inside app.py's
            # shell (ui.navigation.run_inside_app), not as a bare pages/ script.
            page.goto(f"{app.url}/report?session={session_id}")
            wait_text(page, "Database connected", 90)
            shot(page, artifacts, "report_0_deep_link")
            side = page.locator('[data-testid="stSidebar"]').inner_text()
            assert "Session report" in side and "Research" in side and "common" not in side.split(), side
            sign_in(page, ADMIN_PASSWORD, artifacts)
            wait_text(page, "JFK Report", 60)
            assert f"session={session_id}" in page.url, page.url
            side = page.locator('[data-testid="stSidebar"]').inner_text()
            assert "Signed in as admin" in side and "Session report" in side, side  # the app's own shell
            page.wait_for_function(
                "() => { const g = document.querySelector('.js-plotly-plot');"
                " return g && g._fullLayout && g._fullData && g._fullData.length > 0"
                " && g.querySelectorAll('.textpoint text').length > 0; }",
                timeout=60_000,
            )
            page.wait_for_timeout(500)
            shot(page, artifacts, "report_2_signed_in")
            # Streamlit scrolls inside its own container, so a full-page shot is only the viewport:
            # make the viewport as tall as the report for the picture of the whole page.
            page.set_viewport_size({"width": 1400, "height": 2600})
            page.wait_for_timeout(1500)  # let the layout settle before the pictures
            shot(page, artifacts, "report_3_page")
            chart_shot(page, artifacts, "report_4_figure")
            figures = page.evaluate(FIGURE_JS)
            body = page.inner_text("body")
            assert page.locator('[data-testid="stException"]').count() == 0, body
            assert "Traceback" not in body
            browser.close()
        assert "Traceback" not in app.log(), app.log()[-3000:]
    finally:
        db.client.drop_database(db_name)
        db.client.close()

    # One answer, one figure: the aligned timeline.
    assert len(figures) == 1, f"{len(figures)} plotly figures on the page"
    fig = figures[0]
    assert fig["width"] > 600 and fig["height"] > 600, (fig["width"], fig["height"])
    traces = [t for t in fig["traces"] if t["visible"] is not False]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for t in traces:
        by_name.setdefault(t["name"], []).append(t)

    # Every track this data must give: emotion and gaze from the faces, the rest from the speech.
    required = [*EMOTIONS, "emotion", "Eye contact", "eye contact score", "head movement", "Head yaw (°)",
                "Head pitch (°)", "Head roll (°)", "words", "key points covered",
                "key points missed", "pace (wpm)", "pitch (Hz)", "energy (dB)",
                "no face / no video"]  # the video (3.5 s) ends long before the speech (11 s)
    missing = [n for n in required if n not in by_name]
    assert not missing, f"tracks missing: {missing}; figure has {sorted(by_name)}"
    assert all(t["x"] for n in required for t in by_name[n]), "a required track has no points"

    # One time axis: every trace's x axis is the shared one or matches it.
    axes = fig["axes"]
    x_ids = sorted({t["xaxis"] for t in traces})
    bottoms = [a for a in axes.values() if a["id"].startswith("x") and a["rangeslider"] and a["rangeslider"]["visible"]]
    assert len(bottoms) == 1, f"one range slider expected, axes: {axes}"
    shared = bottoms[0]
    for xid in x_ids:
        ax = axes["xaxis" + xid[1:]]
        assert xid == shared["id"] or ax["matches"] == shared["id"], f"{xid} is not linked to {shared['id']}: {ax}"
    rows = {t["xaxis"] for t in traces}
    assert len(rows) >= 6, f"tracks on {len(rows)} rows only: {x_ids}"  # emotion, gaze, head, speech, pace, voice
    head = {by_name[n][0]["xaxis"] for n in ("Head yaw (°)", "Head pitch (°)", "Head roll (°)")}
    assert len(head) == 1 and head != {by_name["Eye contact"][0]["xaxis"]}, "head pose has a row of its own"
    assert shared["title"] == "seconds since the answer began", shared
    for n in ("eye contact score", "head movement", "pitch (Hz)", "energy (dB)"):
        # secondary y axes overlay their row's primary one on the same x axis
        yax = axes["yaxis" + by_name[n][0]["yaxis"][1:]]
        assert yax["anchor"] == by_name[n][0]["xaxis"], (n, yax)

    # x is seconds since the answer began: within the media, starting at 0.
    all_x = [x for t in traces for x in t["x"]]
    lo, hi = min(all_x), max(all_x)
    assert lo >= -0.25 and hi <= AUDIO_SECONDS + 0.5, (lo, hi)  # fill polygons pad half a sample
    point_x = [x for n in ("eye contact score", "words", "pace (wpm)", "pitch (Hz)") for t in by_name[n] for x in t["x"]]
    assert min(point_x) >= 0, min(point_x)
    face_x = by_name["eye contact score"][0]["x"]
    assert max(face_x) <= VIDEO_SECONDS + 0.3, f"face track runs past the video: {max(face_x)}"
    assert max(by_name["words"][0]["x"]) >= VIDEO_SECONDS, "words run on past the end of the video"
    lo_r, hi_r = shared["range"]
    assert lo_r == pytest.approx(0, abs=0.01) and AUDIO_SECONDS - 0.5 <= hi_r <= AUDIO_SECONDS + 0.5, shared["range"]
    assert shared["rangeslider"]["range"] == pytest.approx(shared["range"], abs=0.01), shared["rangeslider"]

    # The words are JFK's, where he says them (README: "Americans" spans t = 1.8 s).
    words = by_name["words"][0]
    assert "Americans" in words["text"] and "country" in words["text"], words["text"]
    t_americans = words["x"][words["text"].index("Americans")]
    assert 0.8 <= t_americans <= 2.2, t_americans
    assert "Americans" in fig["shownWords"], fig["shownWords"]  # drawn on the chart, not only in the data

    print(f"\nreport figure: {len(traces)} traces on x axes {x_ids} (shared {shared['id']}, range slider), "
          f"x {lo:.2f}..{hi:.2f} s, {len(words['text'])} words ('Americans' @ {t_americans:.2f} s), "
          f"tracks: {', '.join(sorted(by_name))}")
