"""The embedded Redis broker: a real redis-server on an owner-only socket, reused, restarted, AOF kept."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu import Connection

from pipeline import embedded_redis
from pipeline.embedded_redis import EmbeddedRedis, RedisStartError, broker_url, client_url
from pipeline.settings import Settings
from tests.waiting import wait_until


@pytest.fixture
def servers() -> Iterator[list[EmbeddedRedis]]:
    """Every EmbeddedRedis a test makes: stopped at the end even when the test fails."""
    made: list[EmbeddedRedis] = []
    yield made
    for server in reversed(made):
        server.stop()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "data" / "redis"


def _new(servers: list[EmbeddedRedis], folder: Path) -> EmbeddedRedis:
    server = EmbeddedRedis(folder)
    servers.append(server)
    return server


def _client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.client_url, socket_timeout=5)


def _listening_tcp_inodes() -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                cols = line.split()
                if cols[3] == "0A":  # TCP_LISTEN
                    inodes.add(cols[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    found: set[str] = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:["):-1])
    return found


def test_start_answers_ping_on_its_socket_and_kombu_uses_the_broker_url(servers: list[EmbeddedRedis],
                                                                        folder: Path) -> None:
    server = _new(servers, folder).start()
    assert server.process is not None and server.alive()
    assert server.socket_path == folder / "redis.sock"
    assert server.broker_url == f"redis+socket://{folder}/redis.sock"
    assert server.client_url == f"unix://{folder}/redis.sock"
    assert client_url(server.broker_url) == server.client_url
    assert _client(server).ping() is True
    # The form Celery is given really reaches this server through kombu's redis transport.
    with Connection(server.broker_url) as conn:
        queue = conn.SimpleQueue("embedded-redis-test")
        queue.put({"job": "x1"})
        message = queue.get(timeout=10)
        assert message.payload == {"job": "x1"}
        message.ack()
        queue.close()


def test_relative_folder_gives_absolute_urls(servers: list[EmbeddedRedis], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    server = _new(servers, Path("data/redis"))
    assert server.folder == tmp_path / "data" / "redis"
    assert server.broker_url == f"redis+socket://{tmp_path}/data/redis/redis.sock"


def test_files_are_owner_only_and_there_is_no_tcp_listener(servers: list[EmbeddedRedis], folder: Path) -> None:
    old = os.umask(0)  # the app's umask must not matter
    try:
        server = _new(servers, folder).start()
    finally:
        os.umask(old)
    client = _client(server)
    client.rpush("q", "payload")  # AOF has content
    assert client.config_get("port") == {"port": "0"}
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("save") == {"save": ""}
    assert client.config_get("protected-mode") == {"protected-mode": "yes"}
    seen_files: set[str] = set()
    for dirpath, _dirs, files in os.walk(folder):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o700, dirpath
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISSOCK(st.st_mode):
                assert stat.S_IMODE(st.st_mode) & 0o077 == 0, f"{name} reachable by group/others"
            else:
                assert stat.S_IMODE(st.st_mode) == 0o600, name
            seen_files.add(name)
    assert {"redis.sock", "redis.log", "redis.server.json", "appendonly.aof.manifest"} <= seen_files
    assert server.process is not None
    assert not _socket_inodes(server.process.pid) & _listening_tcp_inodes(), "redis-server listens on TCP"


def test_second_instance_reuses_the_running_server(servers: list[EmbeddedRedis], folder: Path) -> None:
    first = _new(servers, folder).start()
    _client(first).set("k", "from-first")
    second = _new(servers, folder).start()
    assert second.process is None, "a second redis-server was started on the same folder"
    assert second.broker_url == first.broker_url and second.alive()
    assert _client(second).get("k") == b"from-first"


def test_stop_of_a_reusing_instance_leaves_the_server_up(servers: list[EmbeddedRedis], folder: Path) -> None:
    first = _new(servers, folder).start()
    second = _new(servers, folder).start()
    second.stop()
    assert first.process is not None and first.process.poll() is None
    assert first.alive() and second.alive()
    first.stop()
    assert not first.alive() and not second.alive()


def test_stop_and_start_keeps_the_socket_and_queued_items(servers: list[EmbeddedRedis], folder: Path) -> None:
    server = _new(servers, folder).start()
    url = server.broker_url
    _client(server).rpush("celery", "message-1", "message-2")
    proc = server.process
    server.stop()
    assert proc is not None and proc.returncode is not None
    assert not server.alive() and not (folder / "redis.server.json").exists()
    server.start()
    assert server.broker_url == url
    assert _client(server).lrange("celery", 0, -1) == [b"message-1", b"message-2"]


def test_a_killed_server_is_started_again(servers: list[EmbeddedRedis], folder: Path) -> None:
    server = _new(servers, folder).start()
    assert server.process is not None
    old_pid = server.process.pid
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: not server.alive(), "the killed server to stop answering")
    server.start()
    assert server.process is not None and server.process.pid != old_pid and server.alive()
    # Another process's start (its info file naming a dead pid) starts one too.
    os.kill(server.process.pid, signal.SIGKILL)
    wait_until(lambda: not server.alive(), "the killed server to stop answering")
    other = _new(servers, folder).start()
    assert other.process is not None and other.alive()


def test_missing_binary_is_a_clear_message(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_redis.shutil, "which", lambda _name: None)
    with pytest.raises(RedisStartError, match="redis-server was not found on PATH.*MOCKAI_REDIS_URL"):
        EmbeddedRedis(folder).start()
    assert not folder.exists()


def test_socket_path_too_long_is_a_clear_message(tmp_path: Path) -> None:
    folder = tmp_path / ("d" * 120)
    with pytest.raises(RedisStartError, match="longer than 107 bytes.*MOCKAI_DATA_DIR"):
        EmbeddedRedis(folder).start()


def test_broker_url_uses_the_setting_else_the_embedded_server(tmp_path: Path) -> None:
    remote = Settings(data_dir=tmp_path / "a", redis_url="redis://:pw@redis.example:6379/0")
    assert broker_url(remote) == "redis://:pw@redis.example:6379/0"
    assert not (tmp_path / "a").exists(), "a configured Redis must not start the embedded one"
    local = Settings(data_dir=tmp_path / "b")
    try:
        url = broker_url(local)
        assert url == f"redis+socket://{tmp_path}/b/redis/redis.sock"
        assert embedded_redis.embedded(local).alive()
        assert broker_url(local) == url  # the same server, not a second one
    finally:
        embedded_redis.embedded(local).stop()


def test_client_url_forms() -> None:
    assert client_url("redis+socket:///srv/r/redis.sock") == "unix:///srv/r/redis.sock"
    assert client_url("redis+socket:///srv/r/redis.sock?virtual_host=3") == "unix:///srv/r/redis.sock?db=3"
    assert client_url("redis+socket://:pw@/srv/r/redis.sock") == "unix://:pw@/srv/r/redis.sock"
    assert client_url("redis://:pw@h:6379/0") == "redis://:pw@h:6379/0"
    assert client_url("rediss://h:6380/1") == "rediss://h:6380/1"
    with pytest.raises(ValueError, match="unsupported Redis URL scheme 'amqp'") as exc:
        client_url("amqp://user:secret-pw@h//")
    assert "secret-pw" not in str(exc.value)
    with pytest.raises(ValueError, match="absolute path"):
        client_url("redis+socket://")
