"""The Interview page's upload step drawn from the job record in MongoDB (no worker needed): a queued job
shows its progress and a Cancel button instead of the uploader, a failed one its reason and the uploader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from pipeline import jobs
from pipeline.safe_text import md
from pipeline.settings import get_settings
from tests.pages_support import open_page, page_database


@pytest.fixture
def upload_db(mongo_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real database; the page's live sidecar is a real, unstarted one (the upload step must not use it)."""
    import ui.session
    from sidecar.supervisor import Sidecar

    gen = page_database(mongo_uri, tmp_path, monkeypatch, "test_upload_jobs")
    db = next(gen)
    sidecar = Sidecar(get_settings(), store=False)
    monkeypatch.setattr(ui.session, "get_sidecar", lambda: sidecar)
    try:
        yield db
    finally:
        sidecar.stop()
        next(gen, None)


def _upload_step() -> tuple[AppTest, str]:
    at = open_page("pages/interview.py")
    at.checkbox(key="consent_box").check().run()
    at.button(key="consent_continue").click().run()
    at.text_input(key="candidate_name").input("Queued Person").run()
    at.radio(key="mode").set_value("Upload a recording").run()
    at.button(key="setup_next").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.file_uploader, "no job yet: the step shows the uploader"
    return at, at.session_state["interview"]["session_id"]


def _queue(db: Any, session_id: str) -> str:
    spec = jobs.JobSpec(owner=f"candidate:{session_id}", question="q", session_id=session_id, index=0,
                        media_kind="audio", filename="my *answer*.wav")
    return str(jobs.submit(db, spec, None, max_attempts=3, content_sha256="ab" * 32).job["_id"])


def test_a_queued_job_shows_progress_and_can_be_cancelled(upload_db: Any) -> None:
    at, session_id = _upload_step()
    job_id = _queue(upload_db, session_id)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.file_uploader, "no uploader for this question while its recording is queued"
    assert "Waiting for a worker" in str(at.get("progress")[0].proto)
    at.button(key=f"cancel_{job_id}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert jobs.get(upload_db, job_id)["status"] == jobs.CANCELLED
    assert at.file_uploader, "cancelled: the uploader is back for this question"


def test_a_failed_job_shows_its_reason_and_the_uploader(upload_db: Any) -> None:
    at, session_id = _upload_step()
    job_id = _queue(upload_db, session_id)
    upload_db[jobs.COLLECTION].update_one({"_id": job_id}, {"$set": {
        "status": jobs.FAILED, "stage": "failed", "error": "The file contains no audio."}})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    # the file name is the user's: escaped, so its asterisks are no markup
    assert errors == [f"Analysis of {md('my *answer*.wav')} failed: {md('The file contains no audio.')}"], errors
    assert "\\*answer\\*" in errors[0]
    assert at.file_uploader, "failed: a new upload of this question can be made"
    assert at.session_state["interview"]["index"] == 0
