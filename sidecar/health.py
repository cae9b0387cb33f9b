"""The node's health endpoint for a load balancer: GET /health -> JSON live sessions / capacity,
HTTP 200 while the node can take a candidate, 503 when it is full or its workers are not ready.
GET /lb is the same reading for HAProxy (pipeline/load_balancer.py): 200 take new candidates, 404 full
(``http-check disable-on-404``: the node keeps its own candidates but gets no new ones), 503 not serving."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeline.capacity import SlotUsage

log = logging.getLogger(__name__)


def health_report(usage: SlotUsage, workers_ready: bool, node: str) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of GET /health (counts only, never user data)."""
    if not workers_ready:
        status = "degraded"
    elif usage.free == 0:
        status = "full"
    else:
        status = "ok"
    body = {"status": status, "live_sessions": usage.in_use, "capacity": usage.capacity,
            "free": usage.free, "workers_ready": workers_ready, "node": node}
    return (200 if status == "ok" else 503), body


# /lb: a full node must stay up for the candidates it already serves (their tabs reconnect to it)
LB_CODES = {"ok": 200, "full": 404, "degraded": 503}


class _Handler(BaseHTTPRequestHandler):
    server: _HealthHTTPServer
    server_version = "MockAI-health"
    sys_version = ""

    def _reply(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path not in ("/health", "/lb"):
            self._reply(404, b"not found\n", "text/plain; charset=utf-8")
            return
        try:
            code, body = health_report(self.server.usage(), self.server.ready(), self.server.node)
        except Exception:  # a broken probe must read as "not ready", never as a healthy node
            log.exception("health probe failed")
            code, body = 503, {"status": "degraded", "node": self.server.node}
        if path == "/lb":
            code = LB_CODES[str(body["status"])]
        self._reply(code, json.dumps(body).encode(), "application/json")

    do_HEAD = do_GET  # noqa: N815 (HAProxy may probe with HEAD)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # a probe every few seconds would flood the server log


class _HealthHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], usage: Callable[[], SlotUsage], ready: Callable[[], bool],
                 node: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.usage, self.ready, self.node = usage, ready, node


class HealthServer:
    """The endpoint in a daemon thread of the app's server process; ``port`` 0 picks a free port
    (``self.port`` says which). Other paths answer 404; only GET and HEAD are served."""

    def __init__(self, host: str, port: int, usage: Callable[[], SlotUsage], ready: Callable[[], bool],
                 node: str) -> None:
        self._httpd = _HealthHTTPServer((host, port), usage, ready, node)  # binds now: OSError if taken
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="mockai-health", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/health"

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("health endpoint on %s", self.url)
        return self

    def stop(self) -> None:
        started = self._thread.is_alive()  # shutdown() waits for serve_forever: never call it unstarted
        if started:
            self._httpd.shutdown()
        self._httpd.server_close()
        if started:
            self._thread.join(5)
