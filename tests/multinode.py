"""Two app nodes on one data folder behind Debian's HAProxy, on loopback, for tests/test_multinode.py:
the first node starts the embedded SecantusDB and the second reuses it, as on one machine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.embedded_db import EmbeddedServer
from pipeline.load_balancer import COOKIE, Node, haproxy_config
from pipeline.storage import free_port
from tests.waiting import wait_until


@dataclass
class HealthReply:
    code: int
    body: dict[str, Any]


def health(port: int, path: str = "/health") -> HealthReply:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return HealthReply(r.status, json.loads(r.read() or b"{}"))
    except urllib.error.HTTPError as e:
        body = e.read()
        return HealthReply(e.code, json.loads(body) if body.startswith(b"{") else {})
    except OSError:
        return HealthReply(0, {})


@dataclass
class Balancer:
    url: str
    process: subprocess.Popen
    log_path: Path


@contextmanager
def haproxy(nodes: list[Node], workdir: Path) -> Iterator[Balancer]:
    exe = shutil.which("haproxy")
    assert exe, "haproxy is installed by scripts/setup.sh (make test)"
    port = free_port()
    cfg = workdir / "haproxy.cfg"
    # Checks every 0.5 s: the test waits on HAProxy noticing a full or dead node, not on a clock.
    cfg.write_text(haproxy_config(nodes, f"127.0.0.1:{port}", check_interval_ms=500))
    os.chmod(cfg, 0o600)
    log_path = workdir / "haproxy.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    balancer = Balancer(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        wait_until(lambda: health_through(balancer) == 200 or proc.poll() is not None, "HAProxy to answer", 30)
        assert proc.poll() is None, log_path.read_text()
        yield balancer
    finally:
        proc.terminate()
        proc.wait(10)


def health_through(balancer: Balancer) -> int:
    try:
        with urllib.request.urlopen(f"{balancer.url}/_stcore/health", timeout=3) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def node_of(context: Any) -> str | None:
    """Which node HAProxy pinned a browser context to (its stickiness cookie)."""
    for c in context.cookies():
        if c["name"] == COOKIE:
            return str(c["value"])
    return None


def kill_node(process: subprocess.Popen) -> None:
    """The node dies at once: its Streamlit server and its sidecar workers (one process group);
    the embedded database has its own session and lives on."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def database_uri(data_dir: Path) -> str:
    """The embedded server the first node started on ``data_dir`` (reused, never started here)."""
    server = EmbeddedServer(data_dir / "db")
    port = server._running_elsewhere()
    assert port, "the first node started the embedded database"
    server.port = port
    return server.uri


def stop_database(data_dir: Path) -> None:
    try:
        info = json.loads((data_dir / "db.server.json").read_text())
        os.kill(int(info["pid"]), signal.SIGTERM)
    except (OSError, ValueError, KeyError):
        pass
