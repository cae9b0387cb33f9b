"""Job records in MongoDB (pipeline/jobs.py) and the reaper, against the tests' SecantusDB and a real
redis-server; no workers, so every step is driven by hand and checked exactly."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline import jobs
from pipeline.embedded_redis import EmbeddedRedis
from pipeline.job_inputs import store_input
from pipeline.settings import Settings
from pipeline.storage import ensure_indexes
from pipeline.uploads import UploadTooLargeError
from sidecar.job_queue import app_for, queued_ids, send
from sidecar.job_worker import Reaper


def _spec(**kw: Any) -> jobs.JobSpec:
    base: dict[str, Any] = {"owner": "coach1", "question": "Why?", "candidate": "ann", "source": "batch",
                            "media_kind": "audio", "filename": "a.wav", "batch_id": "b1"}
    return jobs.JobSpec(**{**base, **kw})


def _media(db: Any, payload: bytes = b"x" * 5000) -> Any:
    return store_input(db, io.BytesIO(payload), "a.wav", max_mb=1)


@pytest.fixture
def jdb(db: Any) -> Any:
    ensure_indexes(db)
    return db


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    r = EmbeddedRedis(tmp_path / "redis").start()
    yield r.broker_url
    r.stop()


def test_the_same_submission_is_one_job_and_its_second_copy_is_dropped(jdb: Any) -> None:
    first = jobs.submit(jdb, _spec(), _media(jdb), max_attempts=3)
    again = jobs.submit(jdb, _spec(), _media(jdb), max_attempts=3)
    other = jobs.submit(jdb, _spec(candidate="bob"), _media(jdb), max_attempts=3)
    assert first.created and first.needs_sending and not again.created and not again.needs_sending
    assert again.job["_id"] == first.job["_id"] != other.job["_id"]
    assert first.job["answer_id"] == first.job["_id"] and first.job["session_id"] != other.job["session_id"]
    assert jdb["job_inputs.files"].count_documents({}) == 2  # one per job: the duplicate's copy is gone


def test_an_upload_for_the_same_question_is_one_job_and_found_again(jdb: Any) -> None:
    spec = _spec(session_id="s1", index=2, source="upload", batch_id=None)
    sub = jobs.submit(jdb, spec, _media(jdb), max_attempts=3)
    assert sub.job["session_id"] == "s1"
    found = jobs.for_answer(jdb, "s1", 2)
    assert found is not None and found["_id"] == sub.job["_id"] and jobs.for_answer(jdb, "s1", 1) is None


def test_one_worker_at_a_time_and_a_silent_one_loses_the_job(jdb: Any) -> None:
    job_id = jobs.submit(jdb, _spec(), _media(jdb), max_attempts=3).job["_id"]
    assert jobs.claim(jdb, job_id, "w1", stale_seconds=30)["attempts"] == 1
    assert jobs.claim(jdb, job_id, "w2", stale_seconds=30) is None  # w1 is alive
    assert jobs.beat(jdb, job_id, "w1", "video", 0.4) == jobs.Beat(ours=True, cancel=False)
    jdb.jobs.update_one({"_id": job_id}, {"$set": {"heartbeat_at": datetime.now(UTC) - timedelta(seconds=60)}})
    assert jobs.stale_running(jdb, 30) == [job_id]
    assert jobs.requeue_stale(jdb, job_id, 30)
    taken = jobs.claim(jdb, job_id, "w2", stale_seconds=30)
    assert taken is not None and taken["attempts"] == 2 and taken["worker"] == "w2"
    assert jobs.beat(jdb, job_id, "w1").ours is False  # the old worker learns it lost the job
    assert not jobs.finish(jdb, job_id, "w1", {}) and jobs.finish(jdb, job_id, "w2", {"grade": 0.7})
    assert jobs.claim(jdb, job_id, "w3", stale_seconds=30) is None  # done stays done
    events = [h["event"] for h in jobs.get(jdb, job_id)["history"]]
    assert events == ["started", "worker lost", "started", "done"]


def test_a_job_whose_worker_keeps_dying_ends_failed_with_its_reason(jdb: Any) -> None:
    job_id = jobs.submit(jdb, _spec(), _media(jdb), max_attempts=2).job["_id"]
    for worker in ("w1", "w2"):
        assert jobs.claim(jdb, job_id, worker, stale_seconds=30) is not None
        jdb.jobs.update_one({"_id": job_id}, {"$set": {"heartbeat_at": datetime.now(UTC) - timedelta(seconds=60)}})
        assert jobs.requeue_stale(jdb, job_id, 30)
    assert jobs.claim(jdb, job_id, "w3", stale_seconds=30) is None
    job = jobs.get(jdb, job_id)
    assert job["status"] == jobs.FAILED and "stopped 2 times" in job["error"]


def test_failed_tries_retry_until_attempts_run_out(jdb: Any) -> None:
    job_id = jobs.submit(jdb, _spec(), _media(jdb), max_attempts=2).job["_id"]
    jobs.claim(jdb, job_id, "w1", 30)
    assert jobs.attempt_failed(jdb, job_id, "w1", "db blip", retry_in=1.0) == jobs.RETRYING
    jobs.claim(jdb, job_id, "w1", 30)
    assert jobs.attempt_failed(jdb, job_id, "w1", "db blip", retry_in=1.0) == jobs.FAILED
    assert jobs.retry(jdb, job_id) and jobs.get(jdb, job_id)["attempts"] == 0


def test_cancel_stops_a_waiting_job_at_once_and_a_running_one_at_its_heartbeat(jdb: Any) -> None:
    waiting = jobs.submit(jdb, _spec(candidate="w"), _media(jdb), 3).job["_id"]
    running = jobs.submit(jdb, _spec(candidate="r"), _media(jdb), 3).job["_id"]
    jobs.claim(jdb, running, "w1", 30)
    assert jobs.cancel(jdb, waiting) == jobs.CANCELLED and jobs.claim(jdb, waiting, "w1", 30) is None
    assert jobs.cancel(jdb, running) == jobs.RUNNING
    assert jobs.beat(jdb, running, "w1").cancel is True
    # the same recording submitted again after a cancel runs again, with the new copy of its bytes
    old_file = jobs.get(jdb, waiting)["input"]["file_id"]
    again = jobs.submit(jdb, _spec(candidate="w"), _media(jdb), 3)
    assert again.created and again.needs_sending and again.job["_id"] == waiting
    assert again.job["status"] == jobs.WAITING and again.job["input"]["file_id"] != old_file
    assert jdb["job_inputs.files"].count_documents({"_id": old_file}) == 0


def test_the_queue_bound_counts_waiting_and_running_jobs_per_user(jdb: Any) -> None:
    for c in ("a", "b"):
        jobs.submit(jdb, _spec(candidate=c), _media(jdb), 3)
    jobs.check_queue_room(jdb, "coach1", limit=3)
    with pytest.raises(jobs.QueueFullError, match="You already have 2 recordings"):
        jobs.check_queue_room(jdb, "coach1", limit=2)
    jobs.check_queue_room(jdb, "someone-else", limit=2)
    assert jobs.counts(jdb)[jobs.WAITING] == 2 and jobs.counts(jdb, owner="nobody")[jobs.WAITING] == 0


def test_a_recording_over_the_cap_is_refused_and_nothing_is_kept(jdb: Any) -> None:
    with pytest.raises(UploadTooLargeError):
        store_input(jdb, io.BytesIO(b"z" * (1024 * 1024 + 1)), "big.wav", max_mb=1)
    with pytest.raises(UploadTooLargeError):
        store_input(jdb, io.BytesIO(b""), "big.wav", max_mb=1, declared_size=2 * 1024 * 1024)
    assert jdb["job_inputs.files"].count_documents({}) == 0 and jdb["job_inputs.chunks"].count_documents({}) == 0


def test_the_reaper_sends_again_what_the_broker_lost(jdb: Any, redis_url: str) -> None:
    from pipeline.embedded_redis import client_url

    celery = app_for(redis_url)
    settings = Settings(**{"job_stale_seconds": 30, "job_resend_seconds": 5})
    lost = jobs.submit(jdb, _spec(candidate="lost"), _media(jdb), 3).job["_id"]  # never sent (Redis was down)
    queued = jobs.submit(jdb, _spec(candidate="queued"), _media(jdb), 3).job["_id"]
    assert send(celery, jdb, queued)
    stale = jobs.submit(jdb, _spec(candidate="stale"), _media(jdb), 3).job["_id"]
    jobs.claim(jdb, stale, "dead-worker", 30)
    jdb.jobs.update_one({"_id": stale}, {"$set": {"heartbeat_at": datetime.now(UTC) - timedelta(seconds=60)}})
    jdb.jobs.update_one({"_id": queued}, {"$set": {"sent_at": datetime.now(UTC) - timedelta(seconds=60)}})
    sent = Reaper(celery, settings, client_url(redis_url)).once(jdb)
    assert sorted(sent) == sorted([lost, stale])  # the queued one is still in Redis: not sent twice
    assert queued_ids(client_url(redis_url)) == {lost, queued, stale}
    assert jobs.get(jdb, stale)["status"] == jobs.WAITING
