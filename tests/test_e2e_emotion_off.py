"""End to end with MOCKAI_EMOTION_ENABLED=false: a candidate answers one question live in the browser;
the feedback shown after the answer and the session's report page show the grade and the transcript
and no expression at all (what the user reads, whatever path the feedback takes to its data)."""

from __future__ import annotations

import re
import uuid

import pymongo
import pytest
from playwright.sync_api import sync_playwright

from pipeline.schemas import EMOTIONS
from tests.browser import fake_media_args, go_to_interview, launch_chromium, running_app, shot, wait_text
from tests.test_e2e_interview import make_fake_media
from tests.test_e2e_report import sign_in
from tests.waiting import wait_until

ADMIN_PASSWORD = "e2e-emotion-off-admin"
NAME = "Emotion Off"
# Any emotion label as a word, or the card's expression tile / line, in any case.
EXPRESSION = re.compile(rf"\b({'|'.join(EMOTIONS)}|expressions?)\b", re.IGNORECASE)
SPOKEN = re.compile(r"\b(country|Americans|fellow)\b", re.IGNORECASE)


def _open_transcript(page) -> None:
    """Open every collapsed "Transcript" expander so its text is on the page."""
    for summary in page.locator("summary", has_text="Transcript").all():
        summary.click()
    # Wait on the expanders being open (not a fixed time): their text is then in the page.
    page.wait_for_function("() => [...document.querySelectorAll('details')]"
                           ".filter(d => d.querySelector('summary')?.innerText.includes('Transcript'))"
                           ".every(d => d.open)", timeout=30_000)


def _no_expression(text: str, where: str) -> None:
    found = EXPRESSION.search(text)
    assert found is None, f"{where} names an expression ({found.group(0)!r}):\n{text[-3000:]}"


@pytest.mark.e2e
@pytest.mark.slow
def test_emotion_off_hides_expression_in_feedback_and_report(tmp_path, shared_data, mongo_uri, artifacts):
    video, audio = make_fake_media(shared_data, tmp_path / "media")
    db_name = f"e2e_emo_off_{uuid.uuid4().hex[:8]}"
    env = {"MONGODB_URI": mongo_uri, "MOCKAI_DB_NAME": db_name, "MOCKAI_FLUSH_SECONDS": "1",
           "MOCKAI_EMOTION_ENABLED": "false", "MOCKAI_ADMIN_PASSWORD": ADMIN_PASSWORD}
    db = pymongo.MongoClient(mongo_uri)[db_name]
    try:
        with running_app(tmp_path / "app", env=env) as app, sync_playwright() as p:
            browser = launch_chromium(p, fake_media_args(video, audio))
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(app.url)
            go_to_interview(page, artifacts, NAME, 1)

            page.get_by_role("button", name="Start answer").click()
            wait_text(page, r"Live transcript:.*\b(country|Americans|fellow)\b", 60)
            page.get_by_role("button", name="Finish answer").click()
            wait_text(page, "Feedback:", 90)
            wait_text(page, "Session summary", 60)
            _open_transcript(page)
            body = wait_text(page, r"(?s)Feedback:.*Session summary", 30).group(0)
            shot(page, artifacts, "emotion_off_1_feedback")

            # The stored answer the feedback is about: graded, with words.
            session = wait_until(lambda: db.sessions.find_one({"candidate": NAME}), "the session stored", 60)
            answer = wait_until(lambda: db.answers.find_one({"session_id": session["_id"], "status": "complete"}),
                                "the answer stored complete", 90)
            assert answer["words"] and SPOKEN.search(answer["transcript"]), answer.get("transcript")
            score = (answer.get("grade") or {}).get("score")
            grade_shown = f"{round(score * 100)}%" if score is not None else "no grade"

            # What the candidate reads right after the answer: grade and transcript, no expression.
            assert "Grade" in body and grade_shown in body, body
            assert SPOKEN.search(body), body  # the transcript, opened
            assert "Emotion feedback is switched off." in body, body
            _no_expression(body, "the feedback after the answer")

            # The session's report, as a coach (the admin) opens it.
            page.goto(f"{app.url}/report?session={session['_id']}")
            sign_in(page, ADMIN_PASSWORD, artifacts)
            wait_text(page, NAME, 60)
            page.wait_for_function(
                "() => { const g = document.querySelector('.js-plotly-plot');"
                " return g && g._fullData && g._fullData.length > 0; }", timeout=60_000)
            _open_transcript(page)
            wait_text(page, SPOKEN.pattern, 30)
            report = page.inner_text("body")
            shot(page, artifacts, "emotion_off_2_report")
            assert page.locator('[data-testid="stException"]').count() == 0, report
            assert "Grade" in report and grade_shown in report, report
            assert SPOKEN.search(report), report
            assert "Emotion feedback is switched off." in report, report
            _no_expression(report, "the report page")
            trace_names = page.evaluate(
                "() => [...document.querySelectorAll('.js-plotly-plot')]"
                ".flatMap(g => g._fullData.map(t => String(t.name || '')))")
            assert trace_names and not set(trace_names) & set(EMOTIONS), trace_names
            browser.close()
        assert "Traceback" not in app.log(), app.log()[-3000:]
    finally:
        db.client.drop_database(db_name)
        db.client.close()
