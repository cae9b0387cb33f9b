"""Background jobs end to end: a real Redis, two real `python -m sidecar worker` processes (real models),
the tests' SecantusDB. A batch of 10 recordings, a duplicate submission, a worker SIGKILLed mid-job, Redis
killed and wiped mid-batch, a corrupt recording, and a job that keeps failing."""

from __future__ import annotations

import io
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from pipeline import jobs
from pipeline.settings import Settings
from pipeline.storage import ensure_indexes
from sidecar.job_queue import app_for, send, submit
from tests.jobs_support import JobCluster, audio_clips, database, job_cluster, with_speech
from tests.waiting import wait_until

pytestmark = [pytest.mark.jobs, pytest.mark.slow]
WORKERS = ["wA", "wB"]
QUESTION = "What did the speaker ask of his fellow citizens?"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, mongo_uri: str) -> Iterator[JobCluster]:
    data_dir = tmp_path_factory.mktemp("jobs") / "data"
    with job_cluster(data_dir, mongo_uri, f"jobs_{uuid.uuid4().hex[:8]}") as c:
        for name in WORKERS:
            c.start_worker(name)
        db = database(mongo_uri, c.db_name)
        ensure_indexes(db)
        c.wait_ready(db, WORKERS)
        yield c


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("recordings")
    video = shared_data / "video" / "not_expressive.mp4"
    return {
        "audio": audio_clips(shared_data, folder, 14),
        "video": [with_speech(video, shared_data / "speech" / "jfk.flac", folder / f"talk{i}.mp4", 5.0 + i)
                  for i in range(2)],
        "long_video": with_speech(video, shared_data / "speech" / "multilingual.mp3", folder / "long.mp4", 24.0),
    }


@pytest.fixture
def env(cluster: JobCluster) -> Iterator[tuple[Any, Any, Settings]]:
    db = database(cluster.mongo_uri, cluster.db_name)
    settings = Settings(**{"redis_url": cluster.redis.broker_url, "db_name": cluster.db_name,
                           "mongodb_uri": cluster.mongo_uri, "data_dir": str(cluster.data_dir)})
    yield app_for(cluster.redis.broker_url), db, settings


def _submit(celery: Any, db: Any, settings: Settings, path: Path, batch: str, **spec: Any) -> jobs.Submitted:
    media = "audio" if path.suffix == ".wav" else "video"
    js = jobs.JobSpec(owner="tester", question=QUESTION, candidate=path.stem, source="batch", media_kind=media,
                      filename=path.name, batch_id=batch, **spec)
    with path.open("rb") as fh:
        return submit(celery, db, js, fh, path.name, settings, size=path.stat().st_size)


def _wait_batch(db: Any, batch: str, n: int, timeout: float = 900.0) -> dict[str, int]:
    def finished() -> dict[str, int] | None:
        c = jobs.counts(db, batch_id=batch)
        return c if sum(c[s] for s in jobs.FINISHED) >= n else None
    return wait_until(finished, f"{n} jobs of batch {batch} finished", timeout=timeout, every=0.5)


def _stored_once(db: Any, job: dict[str, Any]) -> dict[str, Any]:
    answers = list(db.answers.find({"session_id": job["session_id"]}))
    assert len(answers) == 1, f"job {job['_id']}: {len(answers)} answers stored"
    assert answers[0]["_id"] == job["answer_id"] and answers[0]["status"] == "complete"
    return answers[0]


def test_a_batch_of_ten_recordings_with_two_workers_stores_each_answer_once(env: Any, clips: dict[str, Any]) -> None:
    celery, db, settings = env
    batch = uuid.uuid4().hex
    recordings = [*clips["audio"][:8], *clips["video"]]
    t0 = time.monotonic()
    submitted = [_submit(celery, db, settings, p, batch) for p in recordings]
    assert all(s.created for s in submitted)
    counts = _wait_batch(db, batch, len(recordings))
    wall = time.monotonic() - t0
    assert counts[jobs.DONE] == 10, counts
    by_worker: dict[str, int] = {}
    for s in submitted:
        job = jobs.get(db, s.job["_id"])
        assert job is not None and job["status"] == jobs.DONE and job["attempts"] == 1
        answer = _stored_once(db, job)
        assert answer["transcript"].strip(), f"{job['spec']['filename']}: empty transcript"
        by_worker[job["worker"]] = by_worker.get(job["worker"], 0) + 1
    assert set(by_worker) == set(WORKERS), f"both workers take jobs: {by_worker}"
    videos = [jobs.get(db, s.job["_id"]) for s in submitted[8:]]
    for v in videos:
        assert v is not None and db.frames.count_documents({"answer_id": v["answer_id"]}) > 0
    print(f"\nbatch of 10 (8 audio, 2 video) on 2 workers: {wall:.1f} s, per worker {by_worker}")


def test_a_duplicate_submission_stores_once(env: Any, clips: dict[str, Any]) -> None:
    celery, db, settings = env
    batch = uuid.uuid4().hex
    path = clips["audio"][8]
    first, again = _submit(celery, db, settings, path, batch), _submit(celery, db, settings, path, batch)
    assert first.created and not again.created and again.job["_id"] == first.job["_id"]
    _wait_batch(db, batch, 1)
    after = _submit(celery, db, settings, path, batch)  # the same file once more, after it is done
    assert not after.created and after.job["status"] == jobs.DONE
    job = jobs.get(db, first.job["_id"])
    assert job is not None and job["attempts"] == 1
    _stored_once(db, job)
    assert db["job_inputs.files"].count_documents({}) == 0, "copies of a done or duplicate job are dropped"


def test_a_worker_killed_mid_job_is_retried_on_the_other_and_stored_once(cluster: JobCluster, env: Any,
                                                                          clips: dict[str, Any]) -> None:
    celery, db, settings = env
    batch = uuid.uuid4().hex
    s = _submit(celery, db, settings, clips["long_video"], batch)

    def mid_video() -> dict[str, Any] | None:
        job = jobs.get(db, s.job["_id"])
        return job if job and job["status"] == jobs.RUNNING and job["stage"] == "video" and job["progress"] > 0.15 \
            else None
    running = wait_until(mid_video, "the long video job analysing frames", timeout=300, every=0.1)
    victim = running["worker"]
    cluster.kill_worker(victim)
    print(f"\nkilled {victim} at stage {running['stage']} progress {running['progress']:.2f}")
    _wait_batch(db, batch, 1, timeout=600)
    job = jobs.get(db, s.job["_id"])
    assert job is not None and job["status"] == jobs.DONE, job
    survivor = next(w for w in WORKERS if w != victim)
    assert job["worker"] == survivor and job["attempts"] == 2
    assert any(h["event"] == "worker lost" for h in job["history"])
    _stored_once(db, job)
    frames = list(db.frames.find({"answer_id": job["answer_id"]}, {"t": 1}))
    assert frames and len({f["t"] for f in frames}) == len(frames), "frames of the killed try are not kept twice"
    print(f"retried on {survivor}; {len(frames)} frames stored once")
    cluster.start_worker(victim)
    cluster.wait_ready(db, WORKERS)


def test_redis_killed_and_wiped_mid_batch_loses_nothing(cluster: JobCluster, env: Any, clips: dict[str, Any]) -> None:
    celery, db, settings = env
    batch = uuid.uuid4().hex
    recordings = clips["audio"][9:14]
    submitted = [_submit(celery, db, settings, p, batch) for p in recordings]
    wait_until(lambda: jobs.counts(db, batch_id=batch)[jobs.RUNNING] >= 1, "a job of the batch running", timeout=300)
    proc = cluster.redis.process
    assert proc is not None
    proc.send_signal(signal.SIGKILL)  # the broker dies with its queue...
    proc.wait(30)
    shutil.rmtree(cluster.redis.folder / "appendonlydir", ignore_errors=True)  # ...and its data is gone
    before = jobs.counts(db, batch_id=batch)
    cluster.redis.start()
    print(f"\nredis killed and wiped with the batch at {before}")
    counts = _wait_batch(db, batch, len(recordings))
    assert counts[jobs.DONE] == len(recordings), counts
    for s in submitted:
        job = jobs.get(db, s.job["_id"])
        assert job is not None and job["status"] == jobs.DONE
        _stored_once(db, job)


def test_a_stored_answer_with_kept_audio_is_reanalysed_in_place(env: Any, shared_data: Path) -> None:
    from pipeline.answer_audio import AudioSpool
    from pipeline.media import load_audio
    from pipeline.records import AnswerStart
    from sidecar.reanalyse import models_fingerprint, reanalysable

    celery, db, settings = env
    session_id, answer_id, t0 = uuid.uuid4().hex, uuid.uuid4().hex, 1_800_000_000_000
    db.sessions.insert_one({"_id": session_id, "candidate": "kept", "status": "complete", "source": "live"})
    # an answer analysed long ago by an older model: its words are wrong, its audio was kept (consent)
    db.answers.insert_one({"_id": answer_id, "session_id": session_id, "index": 0, "question": QUESTION,
                           "status": "complete", "started_ms": t0, "ended_ms": t0 + 11_000,
                           "transcript": "an old wrong transcript", "grade": {"score": 0.1, "band": "weak"}})
    db.frames.insert_one({"_id": f"{answer_id}-1", "session_id": session_id, "answer_id": answer_id, "t": t0 + 500})
    spool = AudioSpool(lambda c, d: db[c].insert_one(d), node="live-node")
    start = AnswerStart(session_id, answer_id, 0, QUESTION, "Ask what you can do for your country.", (), t0,
                        keep_audio=True)
    spool.start(start)
    spool.add(answer_id, t0, load_audio(shared_data / "speech" / "jfk.flac"))
    spool.end(answer_id, t0 + 11_000, "complete")
    assert [a["_id"] for a in reanalysable(db, session_id)] == [answer_id]
    spec = jobs.JobSpec(owner="tester", question=QUESTION, kind="reanalyse", source="reanalyse",
                        session_id=session_id, index=0, answer_id=answer_id, media_kind="audio")
    sub = jobs.submit(db, spec, None, settings.jobs.max_attempts, content_sha256=models_fingerprint(settings))
    assert sub.needs_sending and send(celery, db, sub.job["_id"])
    again = jobs.submit(db, spec, None, settings.jobs.max_attempts, content_sha256=models_fingerprint(settings))
    assert not again.created  # the same models once more: a duplicate
    wait_until(lambda: (jobs.get(db, sub.job["_id"]) or {}).get("status") in jobs.FINISHED, "re-analysis done",
               timeout=300, every=0.5)
    job = jobs.get(db, sub.job["_id"])
    assert job is not None and job["status"] == jobs.DONE, job
    answer = db.answers.find_one({"_id": answer_id})
    assert "Americans" in answer["transcript"] and answer["reanalysed_at"] and answer["grade"]["score"] > 0.1
    assert answer["ended_ms"] == t0 + 11_000 and answer["status"] == "complete"  # on its own clock
    assert db.frames.count_documents({"answer_id": answer_id}) == 1  # its frames are left as they were
    assert db.answers.count_documents({"session_id": session_id}) == 1
    print(f"\nre-analysed: {answer['transcript']!r}, grade {answer['grade']['score']:.2f}")


def test_an_upload_keeps_its_audio_for_re_analysis_only_with_the_candidates_consent(env: Any,
                                                                                     shared_data: Path) -> None:
    from pipeline.answer_audio import COLLECTION, load
    from sidecar.reanalyse import models_fingerprint, reanalysable

    celery, db, settings = env
    path = shared_data / "speech" / "jfk.flac"
    sessions = {True: uuid.uuid4().hex, False: uuid.uuid4().hex}
    answers = {}
    for consent, session_id in sessions.items():
        db.sessions.insert_one({"_id": session_id, "candidate": f"upload-{consent}", "status": "recording",
                                "source": "live", "consent": {"keep_audio": consent}})
        spec = jobs.JobSpec(owner="tester", question=QUESTION, candidate="upload", source="upload",
                            session_id=session_id, index=0, media_kind="audio", filename=path.name)
        with path.open("rb") as fh:
            sub = submit(celery, db, spec, fh, path.name, settings, size=path.stat().st_size)
        answers[consent] = sub.job["answer_id"]
        job_id: str = sub.job["_id"]
        wait_until(lambda: (jobs.get(db, job_id) or {}).get("status") in jobs.FINISHED,  # noqa: B023 (used here)
                   f"upload job (consent {consent}) done", timeout=300, every=0.5)
        assert (jobs.get(db, sub.job["_id"]) or {}).get("status") == jobs.DONE
    kept = load(db, answers[True])
    answer = db.answers.find_one({"_id": answers[True]})
    assert kept is not None and answer is not None
    assert abs(len(kept.audio) / 16000 - 11.0) < 0.1, len(kept.audio)
    assert kept.t_ms == answer["started_ms"] and kept.status == "complete"  # on the answer's own clock
    assert db[COLLECTION].count_documents({"answer_id": answers[True], "expires_at": {"$ne": None}}) == 0
    assert [a["_id"] for a in reanalysable(db, sessions[True])] == [answers[True]]
    assert db[COLLECTION].count_documents({"answer_id": answers[False]}) == 0, "no consent: nothing kept"
    again = jobs.JobSpec(owner="tester", question=QUESTION, kind="reanalyse", source="reanalyse",
                         session_id=sessions[True], index=0, answer_id=answers[True], media_kind="audio")
    sub = jobs.submit(db, again, None, settings.jobs.max_attempts, content_sha256=models_fingerprint(settings))
    assert sub.needs_sending and send(celery, db, sub.job["_id"])
    wait_until(lambda: (jobs.get(db, sub.job["_id"]) or {}).get("status") in jobs.FINISHED, "re-analysis done",
               timeout=300, every=0.5)
    redone = db.answers.find_one({"_id": answers[True]})
    assert (jobs.get(db, sub.job["_id"]) or {}).get("status") == jobs.DONE and redone["reanalysed_at"]
    assert "Americans" in redone["transcript"] and redone["ended_ms"] == answer["ended_ms"]
    print(f"\nupload with consent: {len(kept.audio) / 16000:.1f} s of audio kept for re-analysis; without: none")


def test_a_corrupt_recording_fails_at_once_with_a_plain_reason(env: Any, tmp_path: Path) -> None:
    celery, db, settings = env
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(os.urandom(64 * 1024))
    batch = uuid.uuid4().hex
    s = _submit(celery, db, settings, bad, batch)
    _wait_batch(db, batch, 1, timeout=300)
    job = jobs.get(db, s.job["_id"])
    assert job is not None and job["status"] == jobs.FAILED and job["attempts"] == 1, job
    assert job["error"] and "/" not in job["error"], job["error"]  # plain words, no paths
    assert db.answers.count_documents({"_id": job["answer_id"]}) == 0
    print(f"\ncorrupt recording: {job['error']}")


def test_a_job_that_keeps_failing_is_retried_with_back_off_then_failed(env: Any) -> None:
    celery, db, settings = env
    spec = jobs.JobSpec(owner="tester", question=QUESTION, source="batch", media_kind="audio", filename="gone.wav",
                        batch_id=uuid.uuid4().hex)
    # The fault: the job's recording is missing from the database, so every try fails on the server side.
    from pipeline.job_inputs import InputFile

    missing = InputFile(ObjectId(), 10, "0" * 64, "gone.wav", ".wav")
    sub = jobs.submit(db, spec, missing, max_attempts=3)
    send(celery, db, sub.job["_id"])
    _wait_batch(db, spec.batch_id or "", 1, timeout=300)
    job = jobs.get(db, sub.job["_id"])
    assert job is not None and job["status"] == jobs.FAILED and job["attempts"] == 3, job
    events = [h["event"] for h in job["history"]]
    assert events.count("retrying") == 2 and events[-1] == "failed", events
    assert "problem on the server" in job["error"]
    print(f"\nkept failing: {events}")


def test_submissions_over_the_per_user_bound_are_refused(env: Any) -> None:
    celery, db, settings = env
    tight = settings.with_values({"max_queued_jobs_per_user": 1})
    spec = jobs.JobSpec(owner=f"busy-{uuid.uuid4().hex[:6]}", question=QUESTION, media_kind="audio", filename="a.wav")
    holder = uuid.uuid4().hex
    db[jobs.COLLECTION].insert_one({"_id": holder, "owner": spec.owner, "status": jobs.RUNNING})
    try:
        with pytest.raises(jobs.QueueFullError, match="at most 1"):
            submit(celery, db, spec, io.BytesIO(b"RIFF"), "a.wav", tight, size=4)
    finally:
        db[jobs.COLLECTION].delete_one({"_id": holder})
    assert db["job_inputs.files"].count_documents({"filename": "a.wav"}) == 0, "nothing kept for a refused job"
