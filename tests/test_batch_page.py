"""The Batch page (AppTest) on a real SecantusDB and a real Redis (no workers: jobs are moved through
pipeline.jobs by the test): who may open it, counts and rows per user, cancel and retry, manifests."""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from pipeline import auth, jobs
from pipeline.embedded_redis import EmbeddedRedis
from pipeline.job_inputs import BUCKET, store_input
from pipeline.settings import Settings
from sidecar.job_queue import queued_ids
from tests.pages_support import open_page, page_database
from ui.jobs import QUEUE_UNAVAILABLE

PAGE = "pages/batch.py"


@pytest.fixture
def redis_server() -> Iterator[EmbeddedRedis]:
    folder = Path(tempfile.mkdtemp(prefix="rds-"))  # short: a socket path has at most 107 bytes
    server = EmbeddedRedis(folder).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def page_db(mongo_uri, tmp_path, monkeypatch, redis_server) -> Iterator[Any]:
    monkeypatch.setenv("MOCKAI_REDIS_URL", redis_server.broker_url)
    monkeypatch.setenv("MOCKAI_EMBEDDED_WORKERS", "0")  # the page only enqueues; nothing runs the jobs
    monkeypatch.setenv("MOCKAI_MAX_UPLOAD_MB", "1")
    yield from page_database(mongo_uri, tmp_path, monkeypatch, "test_batch_page")


def _token(db: Any, role: str, username: str) -> str:
    user = auth.create_user(db, username, "a-long-password-1", role)
    return auth.start_login(db, user, Settings())


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _job(db: Any, owner: str, filename: str, candidate: str = "Ada") -> str:
    media = store_input(db, io.BytesIO(filename.encode() * 100), filename, max_mb=1)
    spec = jobs.JobSpec(owner=owner, question="Why queues?", candidate=candidate, source="batch",
                        filename=filename, batch_id="b1")
    return str(jobs.submit(db, spec, media, max_attempts=2).job["_id"])


def _done(db: Any, job_id: str, grade: float = 0.62) -> None:
    assert jobs.claim(db, job_id, "w1", stale_seconds=60) is not None
    assert jobs.finish(db, job_id, "w1", {"grade": grade, "band": "good", "session_id": "sess-1"})


def _plain(text: str) -> str:
    """What a reader sees of md()-escaped text (backslash escapes and word joiners dropped)."""
    return text.replace("\\", "").replace("\u2060", "")


def _metrics(at: AppTest) -> dict[str, int]:
    return {m.label: int(m.value) for m in at.metric}


def _jobs_table(at: AppTest):
    tables = [d.value for d in at.dataframe if "tries" in d.value.columns]
    assert len(tables) == 1, [list(d.value.columns) for d in at.dataframe]
    return tables[0]


def test_candidates_and_researchers_are_refused(page_db):
    for role, name in (("candidate", "cand"), ("researcher", "res")):
        at = _ok(open_page(PAGE, _token(page_db, role, name)))
        assert any("This page is for coach or admin accounts" in e.value for e in at.error), [e.value for e in at.error]
        assert not at.metric and not at.file_uploader


def test_coach_sees_own_counts_and_rows_admin_sees_all(page_db):
    waiting = _job(page_db, "coach1", "ada.mp4")
    finished = _job(page_db, "coach1", "grace.m4a", candidate="Grace")
    _done(page_db, finished)
    _job(page_db, "coach2", "other.mp4", candidate="[evil](http://x)")
    at = _ok(open_page(PAGE, _token(page_db, "coach", "coach1")))
    counts = _metrics(at)
    assert (counts["Waiting"], counts["Done"], counts["Running"], counts["Failed"]) == (1, 1, 0, 0)
    table = _jobs_table(at)
    assert sorted(table["file"]) == ["ada.mp4", "grace.m4a"]
    done = table[table["file"] == "grace.m4a"].iloc[0]
    assert (done["status"], done["grade"], done["band"], done["report"]) == ("done", 0.62, "good",
                                                                             "report?session=sess-1")
    assert (done["tries"], done["worker"]) == ("1/2", "w1")
    first = table[table["file"] == "ada.mp4"].iloc[0]
    assert (first["status"], first["stage"]) == ("waiting", "Waiting for a worker")
    assert pd.isna(first["report"]) and pd.isna(first["grade"])  # no report link before it is done
    assert sorted(at.selectbox(key="batch_job").options) == ["ada.mp4 · Ada · waiting", "grace.m4a · Grace · done"]
    assert jobs.get(page_db, waiting)["status"] == jobs.WAITING

    admin = _ok(open_page(PAGE, _token(page_db, "admin", "admin")))
    assert _metrics(admin)["Waiting"] == 2
    assert sorted(_jobs_table(admin)["candidate"]) == ["Ada", "Grace", "[evil](http://x)"]  # as typed, not a link


def test_cancel_and_retry_change_the_stored_status(page_db, redis_server):
    job_id = _job(page_db, "coach1", "ada.mp4")
    other = _job(page_db, "coach2", "not-mine.mp4")
    at = _ok(open_page(PAGE, _token(page_db, "coach", "coach1")))
    picker = at.selectbox(key="batch_job")
    assert picker.options == ["ada.mp4 · Ada · waiting"]  # coach2's job is not offered
    assert at.button(key="batch_retry").disabled and at.button(key="batch_cancel").disabled  # nothing picked
    _ok(picker.set_value(job_id).run())
    assert not at.button(key="batch_cancel").disabled and at.button(key="batch_retry").disabled
    _ok(at.button(key="batch_cancel").click().run())
    assert jobs.get(page_db, job_id)["status"] == jobs.CANCELLED
    assert any("ada.mp4: cancelled." in _plain(i.value) for i in at.info)
    assert at.button(key="batch_cancel").disabled and not at.button(key="batch_retry").disabled
    _ok(at.button(key="batch_retry").click().run())
    job = jobs.get(page_db, job_id)
    assert (job["status"], job["attempts"]) == (jobs.WAITING, 0) and job["sent_at"] is not None
    assert job_id in (queued_ids(redis_server.client_url) or set())  # sent to the broker again
    assert jobs.get(page_db, other)["status"] == jobs.WAITING


MANIFEST = "file,candidate,question_set,question\nada.mp4,Ada Lovelace,behavioural,2\ngrace.wav,Grace,,Why?\n"


def _upload(at: AppTest, manifest: str, files: list[tuple[str, bytes]]) -> AppTest:
    at.file_uploader(key="batch_manifest").set_value(("batch.csv", manifest.encode(), "text/csv"))
    at.file_uploader(key="batch_files").set_value([(n, c, "application/octet-stream") for n, c in files])
    return _ok(at.run())


def test_a_manifest_with_a_problem_shows_its_line_and_submits_nothing(page_db):
    at = _ok(open_page(PAGE, _token(page_db, "coach", "coach1")))
    assert at.file_uploader(key="batch_files").proto.max_upload_size_mb == 1  # the browser refuses more first
    bad = MANIFEST + "missing.mp4,,behavioural,9\n[evil](http://x).mp4,,,Q\n"
    at = _upload(at, bad, [("ada.mp4", b"a" * 100), ("grace.wav", b"g" * 100)])
    assert any("Nothing was submitted: 3 problem(s)" in e.value for e in at.error)
    shown = " ".join(m.value for m in at.markdown)
    problems = _plain(shown)
    assert "- line 4: 'missing.mp4' was not uploaded" in problems
    assert "- line 4: question set 'behavioural' has no question '9'" in problems
    assert "- line 5: '[evil](http://x).mp4' was not uploaded" in problems
    assert "](http" not in shown  # the file name is shown as typed, never as a link
    assert not [b for b in at.button if b.key == "batch_submit"]
    assert page_db[jobs.COLLECTION].count_documents({}) == 0 and page_db[f"{BUCKET}.files"].count_documents({}) == 0


def test_a_clean_manifest_is_submitted_once(page_db, redis_server):
    at = _ok(open_page(PAGE, _token(page_db, "coach", "coach1")))
    files = [("ada.mp4", b"a" * 100), ("grace.wav", b"g" * 100)]
    at = _upload(at, MANIFEST, files)
    _ok(at.button(key="batch_submit").click().run())
    docs = list(page_db[jobs.COLLECTION].find({}).sort("spec.filename", 1))
    assert [(d["owner"], d["spec"]["filename"], d["spec"]["media_kind"], d["input"]["size"]) for d in docs] == [
        ("coach1", "ada.mp4", "video", 100), ("coach1", "grace.wav", "audio", 100)]
    assert docs[0]["spec"]["question_set"] == "behavioural" and docs[1]["spec"]["question"] == "Why?"
    assert queued_ids(redis_server.client_url) == {d["_id"] for d in docs}
    assert any("ada.mp4: queued" in _plain(s.value) for s in at.success)
    _ok(at.button(key="batch_submit").click().run())  # the same manifest and files again: stored once
    assert page_db[jobs.COLLECTION].count_documents({}) == 2 and page_db[f"{BUCKET}.files"].count_documents({}) == 2
    assert any("ada.mp4: already waiting" in _plain(s.value) for s in at.success)


def test_a_batch_over_the_queue_bound_submits_nothing(page_db, monkeypatch):
    monkeypatch.setenv("MOCKAI_MAX_QUEUED_JOBS_PER_USER", "1")
    at = _ok(open_page(PAGE, _token(page_db, "coach", "coach1")))
    at = _upload(at, MANIFEST, [("ada.mp4", b"a" * 100), ("grace.wav", b"g" * 100)])
    _ok(at.button(key="batch_submit").click().run())
    assert any("Nothing was submitted: You already have 0 recordings" in _plain(e.value) and "at most 1 can be"
               in _plain(e.value) for e in at.error), [e.value for e in at.error]
    assert page_db[jobs.COLLECTION].count_documents({}) == 0 and page_db[f"{BUCKET}.files"].count_documents({}) == 0


def test_admin_folder_import_stays_inside_the_import_folder(page_db, tmp_path):
    (tmp_path / "import" / "day1").mkdir(parents=True)
    (tmp_path / "import" / "day1" / "ada.mp4").write_bytes(b"a" * 100)
    (tmp_path / "secret").mkdir()
    at = _ok(open_page(PAGE, _token(page_db, "admin", "admin")))
    _ok(at.radio(key="batch_mode").set_value("A folder on the server").run())
    for outside in ("../secret", str(tmp_path / "secret"), "/etc"):
        _ok(at.text_input(key="batch_path").input(outside).run())
        assert any("Only files under" in e.value for e in at.error), outside
    _ok(at.text_input(key="batch_path").input("day1").run())
    _ok(at.text_area(key="batch_folder_question").input("Tell me about a queue.").run())
    _ok(at.button(key="batch_submit").click().run())
    [doc] = list(page_db[jobs.COLLECTION].find({}))
    assert (doc["owner"], doc["spec"]["candidate"], doc["spec"]["question"]) == ("admin", "ada", "Tell me about a queue.")


def test_coach_has_no_server_folder_mode(page_db):
    at = _ok(open_page(PAGE, _token(page_db, "coach", "coach1")))
    assert not [r for r in at.radio if r.key == "batch_mode"] and not [t for t in at.text_input if t.key == "batch_path"]


def _stored_session(db: Any, sid: str, coach: str) -> None:
    """A finished session of two answers, the first with its audio kept (the record the sidecar's spool writes)."""
    db.sessions.insert_one({"_id": sid, "candidate": "Ada", "coach": coach, "status": "complete"})
    for i in range(2):
        db.answers.insert_one({"_id": f"{sid}-a{i}", "session_id": sid, "index": i, "status": "complete",
                               "question": f"Question {i + 1}?", "reference": "Ref.", "key_points": ["kp"]})
    db.answer_audio.insert_one({"_id": f"{sid}-a0:start", "kind": "start", "answer_id": f"{sid}-a0",
                                "session_id": sid})


def test_reanalyse_queues_the_kept_answers_once(page_db, redis_server):
    from sidecar.reanalyse import models_fingerprint

    _stored_session(page_db, "s-mine", "coach1")
    _stored_session(page_db, "s-other", "coach2")
    at = _ok(open_page(PAGE, _token(page_db, "coach", "coach1")))
    _ok(at.text_input(key="batch_reanalyse_session").input("s-other").run())
    assert any("There is no session s" in _plain(w.value) for w in at.warning)  # another coach's session
    assert not [b for b in at.button if b.key == "batch_reanalyse"]
    _ok(at.text_input(key="batch_reanalyse_session").input("s-mine").run())
    _ok(at.button(key="batch_reanalyse").click().run())
    [job] = list(page_db[jobs.COLLECTION].find({}))
    assert (job["kind"], job["answer_id"], job["session_id"], job["index"], job["owner"]) == (
        "reanalyse", "s-mine-a0", "s-mine", 0, "coach1")
    assert job["spec"]["question"] == "Question 1?" and job["spec"]["source"] == "reanalyse"
    expected = jobs.job_id_for(jobs.JobSpec.from_doc(job["spec"]), models_fingerprint(Settings()))
    assert job["_id"] == expected  # the same models again: a duplicate
    assert queued_ids(redis_server.client_url) == {job["_id"]}
    _ok(at.button(key="batch_reanalyse").click().run())
    assert page_db[jobs.COLLECTION].count_documents({}) == 1
    assert any("0 re-analysis job(s) queued; 1 already" in _plain(s.value) for s in at.success)


def test_queue_unavailable_is_said_and_the_jobs_still_listed(page_db, tmp_path, monkeypatch):
    """The job service cannot start (the embedded Redis socket path would be too long): the page says so,
    offers no submission, and still lists the jobs and lets them be cancelled (MongoDB holds them)."""
    monkeypatch.delenv("MOCKAI_REDIS_URL")
    monkeypatch.setenv("MOCKAI_DATA_DIR", str(tmp_path / ("d" * 120)))
    job_id = _job(page_db, "coach1", "ada.mp4")
    at = _ok(open_page(PAGE, _token(page_db, "coach", "coach1")))
    assert any(e.value == QUEUE_UNAVAILABLE for e in at.error)  # the Submit tab
    assert any(w.value == QUEUE_UNAVAILABLE for w in at.warning)  # the Queue tab
    assert not at.file_uploader and list(_jobs_table(at)["file"]) == ["ada.mp4"]
    _ok(at.selectbox(key="batch_job").set_value(job_id).run())
    _ok(at.button(key="batch_cancel").click().run())
    assert jobs.get(page_db, job_id)["status"] == jobs.CANCELLED
