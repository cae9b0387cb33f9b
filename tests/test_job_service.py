"""The app's job service: real redis-server, real worker processes (small python -c children standing in
for ``python -m sidecar worker``), restarted when killed, stopped in order, owner-only logs."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.embedded_redis import EmbeddedRedis, ping
from pipeline.settings import Settings
from sidecar import job_service
from sidecar.job_service import MAX_BACKOFF, MIN_BACKOFF, JobService, next_backoff
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]

# Reports what a worker sees (env keys, never their values), proves the broker and database URLs it
# was given work, writes to stdout and stderr, then waits for a signal.
ENV_CHILD = r"""
import json, os, signal, sys
import pymongo, redis
from pipeline.embedded_redis import client_url
out = sys.argv[1]
env = os.environ
client = pymongo.MongoClient(env["MONGODB_URI"], serverSelectionTimeoutMS=10000)
mongo_ok = client.admin.command("ping").get("ok") == 1
redis_ok = redis.Redis.from_url(client_url(env["MOCKAI_REDIS_URL"]), socket_timeout=10).ping()
report = {"keys": sorted(env), "cwd": os.getcwd(), "mongo_ok": mongo_ok, "redis_ok": redis_ok,
          "redis_url": env["MOCKAI_REDIS_URL"], "data_dir": env["MOCKAI_DATA_DIR"], "name": sys.argv[2]}
with open(out + ".tmp", "w") as fh:
    json.dump(report, fh)
os.replace(out + ".tmp", out)
print("out-line", sys.argv[2], flush=True)
print("err-line", sys.argv[2], file=sys.stderr, flush=True)
signal.pause()
"""
PAUSE_CHILD = "import signal, sys; print('up', sys.argv[1], flush=True); signal.pause()"
# Ignores SIGTERM (a worker stuck in a job) and has a child of its own (ffmpeg, say).
STUBBORN_CHILD = r"""
import os, signal, subprocess, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
with open(sys.argv[1] + ".tmp", "w") as fh:
    fh.write(str(child.pid))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
signal.pause()
"""


def pause_command(name: str) -> list[str]:
    return [sys.executable, "-c", PAUSE_CHILD, name]


@pytest.fixture
def services() -> Iterator[list[JobService]]:
    made: list[JobService] = []
    yield made
    for service in reversed(made):
        service.stop(timeout=5)


def _service(services: list[JobService], settings: Settings, node: str,
             command: Callable[[str], list[str]] | None) -> JobService:
    service = JobService(settings, node, worker_command=command)
    services.append(service)
    return service


def _gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet (it runs nothing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] == "Z"


def _alive_pids(service: JobService) -> list[int] | None:
    workers = service.workers()
    if all(w["alive"] for w in workers):
        return [w["pid"] for w in workers]
    return None


def test_workers_get_the_broker_and_database_in_their_env(services: list[JobService], tmp_path: Path,
                                                          mongo_uri: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    out = tmp_path / "out"
    out.mkdir()
    settings = Settings(data_dir=tmp_path / "data", mongodb_uri=mongo_uri, embedded_workers=2)
    service = _service(services, settings, "node-a",
                       lambda name: [sys.executable, "-c", ENV_CHILD, str(out / f"{name}.json"), name]).start()
    assert service.start() is service  # a second start starts nothing more
    assert service.broker_url == f"redis+socket://{tmp_path}/data/redis/redis.sock"
    reports = [json.loads(wait_until(lambda n=n: (out / f"{n}.json").exists() and (out / f"{n}.json").read_text(),
                                     f"worker {n} to report"))
               for n in ("node-a-w0", "node-a-w1")]
    for report in reports:
        assert {"MOCKAI_REDIS_URL", "MONGODB_URI", "MOCKAI_DATA_DIR", "PATH"} <= set(report["keys"])
        assert report["mongo_ok"] is True and report["redis_ok"] is True
        assert report["redis_url"] == service.broker_url
        assert report["data_dir"] == str(tmp_path / "data")
        assert report["cwd"] == str(ROOT)
    workers = service.workers()
    assert [w["name"] for w in workers] == ["node-a-w0", "node-a-w1"]
    assert all(w["alive"] and w["restarts"] == 0 and isinstance(w["pid"], int) for w in workers)
    assert len({w["pid"] for w in workers}) == 2
    assert mongo_uri not in caplog.text  # the database secret never reaches a log


def test_worker_logs_are_owner_only_and_take_stdout_and_stderr(services: list[JobService], tmp_path: Path,
                                                               mongo_uri: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    settings = Settings(data_dir=tmp_path / "data", mongodb_uri=mongo_uri, embedded_workers=1)
    old = os.umask(0)  # the app's umask must not matter
    try:
        _service(services, settings, "host:8501",
                 lambda name: [sys.executable, "-c", ENV_CHILD, str(out / "r.json"), name]).start()
    finally:
        os.umask(old)
    logs = tmp_path / "data" / "logs"
    log_file = logs / "worker-host_8501-w0.log"  # the node's ':' made file-safe
    text = wait_until(lambda: "err-line" in (t := log_file.read_text()) and t, "the worker's stderr in its log")
    assert "out-line host:8501-w0" in text and "err-line host:8501-w0" in text
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    assert stat.S_IMODE((logs / "worker-host_8501-w0.pid").stat().st_mode) == 0o600


def test_a_killed_worker_is_started_again(services: list[JobService], tmp_path: Path, mongo_uri: str) -> None:
    settings = Settings(data_dir=tmp_path / "data", mongodb_uri=mongo_uri, embedded_workers=2)
    service = _service(services, settings, "n", pause_command).start()
    first = wait_until(lambda: _alive_pids(service), "both workers up")
    log_file = tmp_path / "data" / "logs" / "worker-n-w0.log"
    wait_until(lambda: "up n-w0" in log_file.read_text(), "the first worker's line")
    os.kill(first[0], signal.SIGKILL)
    after = wait_until(lambda: (w := service.workers()[0])["restarts"] == 1 and w["alive"] and w,
                       "the killed worker to be started again")
    assert after["pid"] != first[0] and after["last_exit"] == -signal.SIGKILL
    other = service.workers()[1]
    assert other["pid"] == first[1] and other["restarts"] == 0  # the other one was left alone
    wait_until(lambda: log_file.read_text().count("up n-w0") == 2, "the restarted worker's line appended")


def test_a_worker_that_keeps_exiting_is_restarted_with_back_off(services: list[JobService], tmp_path: Path,
                                                                mongo_uri: str) -> None:
    settings = Settings(data_dir=tmp_path / "data", mongodb_uri=mongo_uri, embedded_workers=1)
    service = _service(services, settings, "n", lambda name: [sys.executable, "-c", "raise SystemExit(3)"]).start()
    worker = wait_until(lambda: (w := service.workers()[0])["restarts"] >= 2 and w["last_exit"] == 3 and w,
                        "two restarts of the failing worker", timeout=90)
    assert worker["last_exit"] == 3


def test_back_off_doubles_to_30_s_and_resets_after_a_long_run() -> None:
    waits: list[float] = []
    previous: float | None = None
    for _ in range(8):
        previous = next_backoff(previous, ran_seconds=0.5)
        waits.append(previous)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert (MIN_BACKOFF, MAX_BACKOFF) == (1.0, 30.0)
    assert next_backoff(30.0, ran_seconds=MAX_BACKOFF) == MIN_BACKOFF  # ran long enough: not a crash loop
    assert next_backoff(4.0, ran_seconds=29.0) == 8.0


def test_stop_ends_workers_then_the_embedded_redis(services: list[JobService], tmp_path: Path,
                                                   mongo_uri: str) -> None:
    settings = Settings(data_dir=tmp_path / "data", mongodb_uri=mongo_uri, embedded_workers=2)
    service = _service(services, settings, "n", pause_command).start()
    pids = wait_until(lambda: _alive_pids(service), "both workers up")
    socket = tmp_path / "data" / "redis" / "redis.sock"
    assert ping(socket)
    service.stop(timeout=10)
    workers = service.workers()
    assert [w["alive"] for w in workers] == [False, False]
    assert [w["last_exit"] for w in workers] == [-signal.SIGTERM, -signal.SIGTERM]  # SIGTERM was enough
    assert all(_gone(pid) for pid in pids)
    assert not list((tmp_path / "data" / "logs").glob("*.pid"))
    assert not ping(socket) and not socket.exists()
    service.stop()  # a second stop (atexit after an explicit one) does nothing
    assert [w["restarts"] for w in service.workers()] == [0, 0]  # nothing was started again while stopping
    with pytest.raises(RuntimeError, match="not running"):
        _ = service.broker_url
    service.start()  # and it can start again: same socket, fresh workers
    assert ping(socket)
    again = wait_until(lambda: _alive_pids(service), "both workers up again")
    assert len(again) == 2 and not set(again) & set(pids)


def test_a_worker_ignoring_sigterm_is_killed_with_its_children(services: list[JobService], tmp_path: Path,
                                                               mongo_uri: str) -> None:
    out = tmp_path / "grandchild.pid"
    settings = Settings(data_dir=tmp_path / "data", mongodb_uri=mongo_uri, embedded_workers=1)
    service = _service(services, settings, "n", lambda name: [sys.executable, "-c", STUBBORN_CHILD, str(out)]).start()
    grandchild = int(wait_until(lambda: out.exists() and out.read_text(), "the worker's own child"))
    service.stop(timeout=1)
    assert service.workers()[0]["last_exit"] == -signal.SIGKILL
    wait_until(lambda: _gone(grandchild), "the worker's child to go with it")


def test_no_embedded_workers_starts_only_the_broker(services: list[JobService], tmp_path: Path) -> None:
    # No MONGODB_URI either: an app that only enqueues must not need (or start) anything else.
    settings = Settings(data_dir=tmp_path / "data", embedded_workers=0)
    service = _service(services, settings, "n", pause_command).start()
    assert service.workers() == []
    assert ping(tmp_path / "data" / "redis" / "redis.sock")
    assert not (tmp_path / "data" / "logs").exists() and not (tmp_path / "data" / "db").exists()


def test_a_configured_redis_is_used_and_left_running(services: list[JobService], tmp_path: Path,
                                                     mongo_uri: str) -> None:
    external = EmbeddedRedis(tmp_path / "elsewhere").start()  # stands for a Redis on another machine
    try:
        out = tmp_path / "out"
        out.mkdir()
        settings = Settings(data_dir=tmp_path / "data", mongodb_uri=mongo_uri, embedded_workers=1,
                            redis_url=external.broker_url)
        service = _service(services, settings, "n",
                           lambda name: [sys.executable, "-c", ENV_CHILD, str(out / "r.json"), name]).start()
        assert service.broker_url == external.broker_url
        report = json.loads(wait_until(lambda: (out / "r.json").exists() and (out / "r.json").read_text(),
                                       "the worker to report"))
        assert report["redis_ok"] is True and report["redis_url"] == external.broker_url
        assert not (tmp_path / "data" / "redis").exists()  # no embedded Redis
        service.stop(timeout=10)
        assert external.alive()  # not this service's to stop
    finally:
        external.stop()


def test_the_embedded_redis_is_started_again_when_it_dies(services: list[JobService], tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", embedded_workers=0)
    service = _service(services, settings, "n", None).start()
    url = service.broker_url
    info = tmp_path / "data" / "redis" / "redis.server.json"
    old_pid = json.loads(info.read_text())["pid"]
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: info.exists() and json.loads(info.read_text())["pid"] != old_pid
               and ping(tmp_path / "data" / "redis" / "redis.sock"), "the embedded Redis to be started again")
    assert service.broker_url == url


def test_an_orphan_worker_of_a_dead_app_is_stopped_at_start(services: list[JobService], tmp_path: Path,
                                                            mongo_uri: str) -> None:
    logs = tmp_path / "data" / "logs"
    logs.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid names an app process that is gone
    orphan = subprocess.Popen(pause_command("n-w0"), stdout=subprocess.DEVNULL)
    bystander = subprocess.Popen(pause_command("n-w1"), stdout=subprocess.DEVNULL)
    try:
        (logs / "worker-n-w0.pid").write_text(json.dumps(
            {"pid": orphan.pid, "parent": dead.pid, "argv": pause_command("n-w0")}))
        # Same name scheme but its app (this test process) is alive: another app's worker, left alone.
        (logs / "worker-n-w1.pid").write_text(json.dumps(
            {"pid": bystander.pid, "parent": os.getpid(), "argv": pause_command("n-w1")}))
        settings = Settings(data_dir=tmp_path / "data", mongodb_uri=mongo_uri, embedded_workers=2)
        _service(services, settings, "n", pause_command).start()
        assert orphan.wait(timeout=30) == -signal.SIGTERM
        assert bystander.poll() is None
    finally:
        for proc in (orphan, bystander):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_default_worker_command_is_the_sidecar_worker() -> None:
    assert job_service.default_worker_command("node-w0") == [sys.executable, "-m", "sidecar", "worker",
                                                             "--name", "node-w0"]
