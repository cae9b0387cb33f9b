"""``python -m sidecar batch``: problems stop everything (exit 2), a real submission against SecantusDB and
a real redis-server (jobs recorded, recordings in GridFS, messages in Redis), resubmission stores once,
the queue bound, Redis down, folder mode, and --wait's summary (the test moves the jobs, no workers)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import jobs
from pipeline.embedded_redis import EmbeddedRedis
from pipeline.job_inputs import BUCKET
from pipeline.questions import load_builtin_sets
from sidecar.batch import main
from sidecar.job_queue import queued_ids
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def redis_server() -> Iterator[EmbeddedRedis]:
    """A real redis-server (no TCP) on a short folder: a socket path has at most 107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="rds-"))
    server = EmbeddedRedis(folder).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def env(db, mongo_uri, tmp_path, monkeypatch, redis_server) -> dict[str, str]:
    values = {"MONGODB_URI": mongo_uri, "MOCKAI_DB_NAME": db.name, "MOCKAI_DATA_DIR": str(tmp_path / "data"),
              "MOCKAI_REDIS_URL": redis_server.broker_url, "MOCKAI_SIDECAR_ENABLED": "false"}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MOCKAI_ADMIN_PASSWORD", raising=False)
    return values


@pytest.fixture
def batch(tmp_path, shared_data) -> Path:
    folder = tmp_path / "batch"
    (folder / "audio").mkdir(parents=True)
    shutil.copy(shared_data / "speech" / "jfk.flac", folder / "audio" / "jfk.flac")
    shutil.copy(shared_data / "video" / "baseline.mp4", folder / "baseline.mp4")
    (folder / "manifest.csv").write_text(
        "file,candidate,question_set,question,key_points\n"
        "audio/jfk.flac,John Kennedy,,What should citizens ask?,country;ask not\n"
        "baseline.mp4,Ada,behavioural,1,\n")
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_problems_submit_nothing(env, db, batch, capsys):
    (batch / "manifest.csv").write_text("file,question\naudio/jfk.flac,Q\nmissing.mp4,Q\n../escape.mp4,Q\n"
                                        "baseline.mp4,\n")
    assert main(["--manifest", str(batch / "manifest.csv")]) == 2
    err = capsys.readouterr().err
    assert "nothing submitted: 3 problem(s)" in err
    assert "line 3: missing file 'missing.mp4'" in err
    assert "line 4: '../escape.mp4' is outside the manifest's folder" in err
    assert "line 5: empty question" in err
    assert db[jobs.COLLECTION].count_documents({}) == 0 and db[f"{BUCKET}.files"].count_documents({}) == 0


def test_unreadable_manifest_and_folder_arguments(env, batch, capsys):
    assert main(["--manifest", str(batch / "nope.csv")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert main(["--folder", str(batch)]) == 2
    assert "--folder needs one question" in capsys.readouterr().err
    assert main(["--folder", str(batch), "--question-set", "behavioural"]) == 2
    assert "--question-set needs --question-number" in capsys.readouterr().err


def _run_cli(args: list[str], env: dict[str, str], out: Path) -> str:
    """``python -m sidecar batch ARGS`` as its own process; its output (it must exit 0)."""
    with out.open("wb") as fh:
        rc = subprocess.run([sys.executable, "-m", "sidecar", "batch", *args], cwd=ROOT, env=env, stdout=fh,
                            stderr=subprocess.STDOUT, timeout=300).returncode
    text = out.read_text()
    assert rc == 0, text
    return text


def test_real_submission_records_jobs_and_queues_their_messages(env, db, batch, redis_server, tmp_path):
    args = ["--manifest", str(batch / "manifest.csv"), "--owner", "coach1"]

    def run() -> str:
        return _run_cli(args, {**os.environ, **env}, tmp_path / "out.txt")

    text = run()
    docs = list(db[jobs.COLLECTION].find({}).sort("spec.filename", 1))
    assert len(docs) == 2 and len({d["batch_id"] for d in docs}) == 1
    ids = {d["_id"] for d in docs}
    for job_id in ids:
        assert f"{job_id}  queued" in text
    baseline, jfk = docs
    assert (jfk["owner"], jfk["status"], jfk["kind"], jfk["spec"]["source"]) == ("coach1", "waiting", "analyse", "batch")
    assert (jfk["spec"]["candidate"], jfk["spec"]["question"], jfk["spec"]["media_kind"], jfk["spec"]["key_points"]) \
        == ("John Kennedy", "What should citizens ask?", "audio", ["country", "ask not"])
    first = load_builtin_sets()[0]
    assert first.id == "behavioural"
    assert (baseline["spec"]["question"], baseline["spec"]["media_kind"], baseline["spec"]["question_set"]) == (
        first.questions[0].question, "video", "behavioural")
    assert jfk["input"]["sha256"] == _sha(batch / "audio" / "jfk.flac")
    assert baseline["input"]["size"] == (batch / "baseline.mp4").stat().st_size
    assert all(d["sent_at"] is not None for d in docs)
    assert queued_ids(redis_server.client_url) == ids  # the broker carries exactly "run job X" for each

    again = run()  # the same manifest again: the same batch and jobs, nothing stored twice or sent again
    assert again.count("already waiting") == 2 and " queued " not in again
    assert db[jobs.COLLECTION].count_documents({}) == 2
    assert db[f"{BUCKET}.files"].count_documents({}) == 2
    assert queued_ids(redis_server.client_url) == ids

    assert jobs.claim(db, jfk["_id"], "w1", stale_seconds=60) is not None  # it fails: a new copy queues it again
    assert jobs.attempt_failed(db, jfk["_id"], "w1", "The recording has no sound.", retry_in=None) == jobs.FAILED
    third = run()
    assert f"{jfk['_id']}  queued again" in third and f"{baseline['_id']}  already waiting" in third
    assert jobs.get(db, jfk["_id"])["status"] == jobs.WAITING
    assert db[f"{BUCKET}.files"].count_documents({}) == 2  # the failed job's old copy was dropped


def test_embedded_redis_keeps_the_messages_after_the_command(env, db, batch, tmp_path):
    """MOCKAI_REDIS_URL unset: the command starts the embedded Redis on the data folder; it stops with the
    command, and the messages are there when it starts again (what a worker on that folder does)."""
    data = Path(tempfile.mkdtemp(prefix="bat-"))  # short: the socket lives under it
    try:
        child = {**os.environ, **env, "MOCKAI_DATA_DIR": str(data)}
        child.pop("MOCKAI_REDIS_URL")
        _run_cli(["--manifest", str(batch / "manifest.csv")], child, tmp_path / "out.txt")
        ids = {d["_id"] for d in db[jobs.COLLECTION].find({}, {"_id": 1})}
        assert len(ids) == 2
        again = EmbeddedRedis(data / "redis").start()
        try:
            assert queued_ids(again.client_url) == ids
        finally:
            again.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)


def test_broker_that_cannot_start_submits_nothing(env, db, batch, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MOCKAI_REDIS_URL")
    monkeypatch.setenv("MOCKAI_DATA_DIR", str(tmp_path / ("d" * 120)))  # the embedded Redis socket: too long
    assert main(["--manifest", str(batch / "manifest.csv")]) == 2
    assert "nothing submitted: the job queue is unavailable" in capsys.readouterr().err
    assert db[jobs.COLLECTION].count_documents({}) == 0 and db[f"{BUCKET}.files"].count_documents({}) == 0


def test_queue_bound_refuses_the_whole_batch(env, db, batch, monkeypatch, capsys):
    monkeypatch.setenv("MOCKAI_MAX_QUEUED_JOBS_PER_USER", "1")
    assert main(["--manifest", str(batch / "manifest.csv")]) == 2
    assert "at most 1 can be queued per user" in capsys.readouterr().err
    assert db[jobs.COLLECTION].count_documents({}) == 0 and db[f"{BUCKET}.files"].count_documents({}) == 0


def test_redis_down_keeps_the_jobs_waiting(env, db, batch, monkeypatch, capsys, redis_server):
    redis_server.stop()
    assert main(["--manifest", str(batch / "manifest.csv")]) == 0
    assert capsys.readouterr().out.count("Redis unreachable now") == 2
    docs = list(db[jobs.COLLECTION].find({}))
    assert len(docs) == 2 and all(d["status"] == "waiting" and d["sent_at"] is None for d in docs)


def test_folder_mode(env, db, batch, redis_server, capsys):
    assert main(["--folder", str(batch), "--question-set", "behavioural", "--question-number", "2",
                 "--owner", "coach2"]) == 0  # audio/ is not read: non-recursive
    docs = list(db[jobs.COLLECTION].find({}))
    assert [(d["spec"]["filename"], d["spec"]["candidate"], d["owner"]) for d in docs] == [
        ("baseline.mp4", "baseline", "coach2")]
    assert docs[0]["spec"]["question"] == load_builtin_sets()[0].questions[1].question
    assert queued_ids(redis_server.client_url) == {docs[0]["_id"]}


def test_wait_follows_the_jobs_and_summarises(env, db, batch, capsys):
    """The test plays the worker through pipeline.jobs (claim, finish, fail): --wait ends when both have."""
    def worker() -> None:
        found = wait_until(lambda: list(db[jobs.COLLECTION].find({}).sort("spec.filename", 1))
                           if db[jobs.COLLECTION].count_documents({}) == 2 else None, "the batch's jobs")
        video, audio = (d["_id"] for d in found)
        assert jobs.claim(db, video, "w1", stale_seconds=60) is not None
        assert jobs.finish(db, video, "w1", {"grade": 0.714, "band": "good", "session_id": "s"})
        assert jobs.claim(db, audio, "w1", stale_seconds=60) is not None
        assert jobs.attempt_failed(db, audio, "w1", "The recording has no sound.", retry_in=None) == jobs.FAILED

    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _catch(worker, errors))
    thread.start()
    rc = main(["--manifest", str(batch / "manifest.csv"), "--wait"])
    thread.join()
    assert not errors, errors
    out = capsys.readouterr().out
    assert rc == 1, out  # one failed
    lines = [ln.split() for ln in out.splitlines()]
    assert ["baseline.mp4", "done", "0.71", "good"] in lines
    assert ["jfk.flac", "failed", "The", "recording", "has", "no", "sound."] in lines


def _catch(fn, errors: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as exc:
        errors.append(exc)


def test_follow_says_when_no_worker_takes_the_jobs(db, tmp_path):
    """Nobody runs the jobs: --wait says how to start a worker (after no_worker_after, 0 here), and ends
    once every job has ended (here: cancelled by the test)."""
    from pipeline.job_inputs import store_input
    from sidecar.batch import NO_WORKER, follow

    ids = []
    for name in ("a.wav", "b.wav"):
        media = store_input(db, io.BytesIO(name.encode() * 10), name, max_mb=1)
        ids.append(jobs.submit(db, jobs.JobSpec(owner="cli", question="Q", filename=name), media, 1).job["_id"])
    out = io.StringIO()
    got: list[dict[str, int]] = []
    thread = threading.Thread(target=lambda: got.append(follow(db, ids, out, poll=0.05, no_worker_after=0.0)))
    thread.start()
    wait_until(lambda: "python -m sidecar worker" in out.getvalue(), "the no-worker note")
    assert out.getvalue().count(NO_WORKER.format(s=0.0)) == 1
    for job_id in ids:
        assert jobs.cancel(db, job_id) == jobs.CANCELLED
    thread.join(timeout=60)
    assert got and got[0][jobs.CANCELLED] == 2 and got[0][jobs.WAITING] == 0
