"""End to end: the sidebar what-if in the real app and Debian's Chromium, on a report made from
../shared/data (as tests/test_e2e_report.py): moving the pause-length threshold changes the number
of pause marks on the timeline, and nothing is written to the database."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pymongo
import pytest
from playwright.sync_api import sync_playwright

from tests.browser import launch_chromium, running_app, shot, wait_script_done, wait_text
from tests.test_e2e_report import ADMIN_PASSWORD, analyse_into, sign_in

PAUSE_MARKS_JS = """() => {
  const gd = document.querySelector('.js-plotly-plot');
  if (!gd || !gd._fullData) return null;
  const t = gd._fullData.find(t => t.name === 'pause');
  return t ? Array.from(t.x || []).length : 0;
}"""


def _pause_marks(page: Any) -> int:
    return int(page.evaluate(PAUSE_MARKS_JS) or 0)


def _collections(db: Any) -> dict[str, int]:
    return {n: db[n].count_documents({}) for n in sorted(db.list_collection_names()) if n not in ("logins",)}


def _set_threshold(page: Any, box: Any, value: str) -> None:
    """Type a sidebar value and wait for the what-if badge. A value typed while a script run is still
    settling can be lost when that run redraws the widget: wait for the run, and type it once more if
    the badge does not come (a what-if that never applies still fails, on the second try)."""
    for attempt in range(2):
        wait_script_done(page)
        box.fill(value)
        box.press("Enter")
        try:
            wait_text(page, "what-if: not saved", 30)
            return
        except AssertionError:
            if attempt:
                raise
            print(f"\nthe what-if badge did not come; the box reads {box.input_value()!r}: typing {value!r} again")


@pytest.mark.e2e
@pytest.mark.slow
def test_pause_threshold_changes_the_pause_marks(tmp_path, shared_data, mongo_uri, artifacts):
    db_name = f"e2e_whatif_{uuid.uuid4().hex[:8]}"
    env = {"MONGODB_URI": mongo_uri, "MOCKAI_DB_NAME": db_name, "MOCKAI_FLUSH_SECONDS": "1"}
    report = analyse_into({**os.environ, **env, "MOCKAI_DATA_DIR": str(tmp_path / "cli")}, shared_data)
    session_id = report["session_id"]
    db = pymongo.MongoClient(mongo_uri)[db_name]
    try:
        app_env = {**env, "MOCKAI_ADMIN_PASSWORD": ADMIN_PASSWORD, "MOCKAI_SIDECAR_ENABLED": "false"}
        with running_app(tmp_path / "app", env=app_env) as app, sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(f"{app.url}/report?session={session_id}")
            sign_in(page, ADMIN_PASSWORD, artifacts)
            wait_text(page, "JFK Report", 120)  # a cold first page (fonts, Plotly bundle) can take a while
            wait_text(page, r"Thresholds \(what-if\)", 30)
            page.wait_for_function("() => { const g = document.querySelector('.js-plotly-plot');"
                                   " return g && g._fullData && g._fullData.length > 0; }", timeout=60_000)
            before = _pause_marks(page)
            stored = _collections(db)
            _set_threshold(page, page.get_by_label("pause_seconds (profile: 1)", exact=True), "0.2")
            # null while Streamlit swaps the chart during the rerun: wait on a drawn chart with new marks
            page.wait_for_function(f"() => {{ const n = ({PAUSE_MARKS_JS})(); return n !== null && n !== {before}; }}",
                                   timeout=30_000)
            after = _pause_marks(page)
            wait_script_done(page)  # the rerun finished: the picture shows the settled page
            shot(page, tmp_path, "whatif_pauses")
            shot(page, artifacts, "whatif_pauses")
            body = page.inner_text("body")
            assert page.locator('[data-testid="stException"]').count() == 0, body
            assert _collections(db) == stored, "a what-if wrote to the database"
            browser.close()
        assert "Traceback" not in app.log(), app.log()[-3000:]
    finally:
        db.client.drop_database(db_name)
        db.client.close()
    assert after > before, (before, after)
    print(f"\nwhat-if pause_seconds 1 -> 0.2: pause marks {before} -> {after}; screenshot {tmp_path}/whatif_pauses.png")
