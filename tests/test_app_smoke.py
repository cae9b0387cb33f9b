"""The real app, started headless with MONGODB_URI unset (embedded database), in a real browser."""

from __future__ import annotations

import urllib.request

import pytest
from playwright.sync_api import sync_playwright

from tests.browser import launch_chromium, running_app, wait_script_done, wait_text

PAGES = {"interview": "", "sessions": "sessions", "report": "report", "research": "research"}


@pytest.mark.e2e
def test_app_health_and_every_page(tmp_path, artifacts):
    with running_app(tmp_path / "app") as app:
        with urllib.request.urlopen(f"{app.url}/_stcore/health", timeout=5) as r:
            assert r.read().decode().strip() == "ok"
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            for name, path in PAGES.items():
                page.goto(f"{app.url}/{path}")
                page.wait_for_selector("h1", timeout=60_000)
                wait_text(page, "Database connected")  # the sidebar's status: app.py's shell ran
                wait_script_done(page)  # an exception further down the page would be drawn by now
                page.screenshot(path=str(artifacts / f"smoke_{name}.png"), full_page=True)
                text = page.inner_text("body")
                assert page.locator('[data-testid="stException"]').count() == 0, text
                assert "Traceback" not in text and "Error" not in page.title()
                assert "Database connected" in text, text
            browser.close()
        assert (tmp_path / "app" / "db").is_dir(), "the embedded database was started under the data folder"
        assert "Traceback" not in app.log()
