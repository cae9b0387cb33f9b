"""Admission control: the node's capacity, live slots (refusal, wait estimate, expiry, races), the
health endpoint on loopback, and the real app refusing a live session past its capacity."""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import sync_playwright
from pydantic import ValidationError

from pipeline.capacity import (
    LiveSlots,
    SlotUsage,
    busy_message,
    node_capacity,
    node_id,
    remaining_interview_seconds,
)
from pipeline.settings import CapacitySettings, Settings, settings_error_text
from pipeline.storage import free_port
from sidecar.health import HealthServer, health_report
from tests.browser import WEBRTC_IFRAME as WEBRTC
from tests.browser import launch_chromium, running_app, shot, wait_script_done, wait_text
from tests.waiting import wait_until


class FakeClock:
    """A monotonic clock the test moves by hand (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def options(**values: Any) -> CapacitySettings:
    return CapacitySettings(**values)


# ----------------------------------------------------------------------------- capacity


@pytest.mark.parametrize(("cores", "cost", "expected"), [
    (2, 0.35, 5),    # 2 / 0.35 = 5.7
    (2, 0.5, 4),     # this box with the default
    (16, 0.35, 45),  # 45.7
    (1, 0.35, 2),
    (7, 0.35, 20),   # exactly 20 although 7 / 0.35 is 19.999999999999996 in floating point
    (2, 0.71, 2),    # the cost measured before issue 14's work
    (1, 3.0, 1),     # a session costing more than the node has: still one, never zero
])
def test_capacity_is_cores_over_measured_cost_floored_at_least_one(cores: int, cost: float, expected: int) -> None:
    assert node_capacity(options(node_cores=cores, cores_per_live_session=cost)) == expected


def test_max_live_sessions_overrides_the_computed_capacity() -> None:
    assert node_capacity(options(node_cores=2, cores_per_live_session=0.35, max_live_sessions=1)) == 1
    assert node_capacity(options(node_cores=2, cores_per_live_session=0.35, max_live_sessions=9)) == 9


def test_capacity_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOCKAI_HEALTH_PORT", raising=False)  # tests/conftest.py turns it off for AppTests
    default = Settings().capacity
    assert default.node_cores == len(os.sched_getaffinity(0))
    assert default.cores_per_live_session == 0.5 and default.max_live_sessions == 0
    assert default.health_port is None and default.node_name == ""
    monkeypatch.setenv("MOCKAI_NODE_CORES", "4")
    monkeypatch.setenv("MOCKAI_CORES_PER_LIVE_SESSION", "0.5")
    monkeypatch.setenv("MOCKAI_HEALTH_PORT", "0")
    monkeypatch.setenv("MOCKAI_NODE_NAME", "node-a")
    s = Settings()
    assert node_capacity(s.capacity) == 8 and s.capacity.health_port == 0
    assert node_id(s.capacity, 8501) == "node-a"
    monkeypatch.setenv("MOCKAI_MAX_LIVE_SESSIONS", "3")
    monkeypatch.setenv("MOCKAI_HEALTH_PORT", "")  # empty = unset: the Streamlit port + 1
    s = Settings()
    assert node_capacity(s.capacity) == 3 and s.capacity.health_port is None
    assert Settings(max_live_sessions=2).value("max_live_sessions") == 2


def test_node_id_defaults_to_hostname_and_port() -> None:
    import socket

    assert node_id(options(), 8601) == f"{socket.gethostname()}:8601"


@pytest.mark.parametrize(("env", "value", "needle"), [
    ("MOCKAI_CORES_PER_LIVE_SESSION", "0", "MOCKAI_CORES_PER_LIVE_SESSION"),
    ("MOCKAI_NODE_CORES", "0", "MOCKAI_NODE_CORES"),
    ("MOCKAI_MAX_LIVE_SESSIONS", "-1", "MOCKAI_MAX_LIVE_SESSIONS"),
    ("MOCKAI_HEALTH_PORT", "70000", "MOCKAI_HEALTH_PORT"),
    ("MOCKAI_LIVE_SLOT_HEARTBEAT_SECONDS", "40", "at most half of live_slot_timeout_seconds"),
])
def test_bad_capacity_settings_are_refused_by_name(monkeypatch: pytest.MonkeyPatch, env: str, value: str,
                                                    needle: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError) as exc:
        Settings()
    assert needle in settings_error_text(exc.value)


# ----------------------------------------------------------------------------- live slots


def test_a_full_node_refuses_with_the_wait_until_the_soonest_session_should_end() -> None:
    clock = FakeClock()
    slots = LiveSlots(options(max_live_sessions=2, live_session_typical_minutes=12,
                              live_slot_timeout_seconds=3600, live_slot_heartbeat_seconds=5), clock)
    assert slots.try_acquire("a").granted
    clock.advance(4 * 60)
    b = slots.try_acquire("b")
    assert b.granted and (b.in_use, b.capacity) == (2, 2)
    clock.advance(60)  # a has run 5 of its typical 12 minutes, b 1: a should end first, in 7 minutes
    refused = slots.try_acquire("c")
    assert not refused.granted and refused.wait_minutes == 7
    assert refused.message == ("All interview slots on this server are busy (2 of 2 in use). "
                               "Try again in about 7 minutes.")
    clock.advance(6 * 60 + 30)  # 30 s left: rounded up to one minute
    assert slots.try_acquire("c").message == ("All interview slots on this server are busy (2 of 2 in use). "
                                              "Try again in about 1 minute.")
    clock.advance(10 * 60)  # both past the typical length: any moment now, said as one minute
    assert slots.try_acquire("c").wait_minutes == 1
    assert slots.usage() == SlotUsage(2, 2) and slots.usage().free == 0
    assert slots.release("a") and not slots.release("a")
    assert slots.try_acquire("c").granted and slots.usage().free == 0


def test_the_estimate_follows_each_session_s_questions_left() -> None:
    clock = FakeClock()
    opts = options(max_live_sessions=2, live_question_overhead_seconds=60, live_slot_timeout_seconds=3600)
    slots = LiveSlots(opts, clock)
    five = [150, 150, 180, 150, 240]
    assert remaining_interview_seconds(five, 0, opts) == 870 + 5 * 60
    assert remaining_interview_seconds(five, 3, opts) == 390 + 2 * 60
    assert remaining_interview_seconds(five, 5, opts) == 0
    assert slots.try_acquire("long", remaining_interview_seconds(five, 0, opts)).granted  # 19.5 min
    assert slots.try_acquire("short", remaining_interview_seconds([150], 0, opts)).granted  # 3.5 min
    assert slots.try_acquire("next").wait_minutes == 4  # "short" should end first: 3.5 min, rounded up
    clock.advance(3 * 60)
    assert slots.touch("long", remaining_interview_seconds(five, 4, opts))  # long is on its last question: 5 min
    assert slots.try_acquire("next").wait_minutes == 1  # short: 30 s left
    assert slots.release("short")
    assert slots.try_acquire("other").granted and slots.touch("other", 0)  # an interview about to end
    assert slots.try_acquire("next").message == ("All interview slots on this server are busy (2 of 2 in use). "
                                                 "Try again in about 1 minute.")
    assert slots.release("other")
    assert slots.try_acquire("next", 600).granted and slots.try_acquire("later").wait_minutes == 5  # long: 5 min
    assert busy_message(3, 3, 2) == ("All interview slots on this server are busy (3 of 3 in use). "
                                     "Try again in about 2 minutes.")


def test_re_acquiring_is_idempotent_and_a_running_session_is_never_refused() -> None:
    clock = FakeClock()
    slots = LiveSlots(options(max_live_sessions=1), clock)
    first = slots.try_acquire("a")
    again = slots.try_acquire("a")  # a rerun or a reload that resumes the same interview
    assert first.granted and again.granted and slots.usage().in_use == 1
    assert not slots.try_acquire("b").granted
    assert slots.try_acquire("a").granted and slots.holds("a") and not slots.holds("b")
    with pytest.raises(ValueError, match="session id"):
        slots.try_acquire("")


def test_a_slot_no_tab_refreshes_expires_and_frees_the_node() -> None:
    clock = FakeClock()
    slots = LiveSlots(options(max_live_sessions=1, live_slot_timeout_seconds=60,
                              live_slot_heartbeat_seconds=5), clock)
    assert slots.try_acquire("a").granted
    clock.advance(50)
    assert slots.touch("a")  # the tab is open: refreshed at t=50
    clock.advance(55)
    assert not slots.try_acquire("b").granted  # 55 s since the last refresh: still a's
    clock.advance(6)  # 61 s without a refresh: the tab was closed without ending
    assert slots.usage().in_use == 0 and not slots.touch("a")
    assert slots.try_acquire("b").granted and not slots.try_acquire("a").granted


def _race(slots: LiveSlots, contenders: int) -> dict[str, bool]:
    """``contenders`` threads released at once by a barrier, each asking for a slot."""
    barrier = threading.Barrier(contenders)
    results: dict[str, bool] = {}

    def ask(sid: str) -> None:
        barrier.wait()
        results[sid] = slots.try_acquire(sid).granted

    threads = [threading.Thread(target=ask, args=(f"racer-{i}",)) for i in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_threads_racing_for_the_last_slot_exactly_one_wins() -> None:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows: the race is real
    try:
        for _ in range(25):
            slots = LiveSlots(options(max_live_sessions=3))
            assert slots.try_acquire("held-1").granted and slots.try_acquire("held-2").granted
            results = _race(slots, 16)
            assert len(results) == 16
            assert sum(results.values()) == 1, results
            assert slots.usage() == SlotUsage(3, 3)
    finally:
        sys.setswitchinterval(old)


# ----------------------------------------------------------------------------- health endpoint


def _get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def health() -> Iterator[tuple[HealthServer, LiveSlots, dict[str, bool]]]:
    slots = LiveSlots(options(max_live_sessions=2))
    ready = {"value": True}
    server = HealthServer("127.0.0.1", 0, slots.usage, lambda: ready["value"], "node-test:8501").start()
    yield server, slots, ready
    server.stop()


def test_health_endpoint_on_loopback_200_ok_then_503_full_or_degraded(health: Any) -> None:
    server, slots, ready = health
    assert server.url == f"http://127.0.0.1:{server.port}/health" and server.port > 0
    code, headers, body = _get(server.url)
    assert code == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": "ok", "live_sessions": 0, "capacity": 2, "free": 2,
                                "workers_ready": True, "node": "node-test:8501"}
    slots.try_acquire("candidate-1")
    code, _, body = _get(server.url)
    assert code == 200 and json.loads(body)["free"] == 1
    slots.try_acquire("candidate-2")
    code, _, body = _get(server.url)
    assert code == 503 and json.loads(body) == {"status": "full", "live_sessions": 2, "capacity": 2, "free": 0,
                                                "workers_ready": True, "node": "node-test:8501"}
    assert "candidate" not in body.decode()  # counts only: no session ids, no names
    slots.release("candidate-2")
    ready["value"] = False  # workers warming up or restarting: no new candidates
    code, _, body = _get(server.url)
    assert code == 503 and json.loads(body)["status"] == "degraded" and json.loads(body)["free"] == 1
    ready["value"] = True
    code, _, body = _get(server.url, "HEAD")
    assert code == 200 and body == b""


def test_lb_path_keeps_a_full_node_up_for_its_own_candidates(health: Any) -> None:
    """HAProxy's check (pipeline/load_balancer.py): 200 new candidates welcome, 404 full (disable-on-404
    keeps the node's own sticky candidates), 503 not serving; the same JSON body as /health."""
    server, slots, ready = health
    lb = f"http://127.0.0.1:{server.port}/lb"
    assert _get(lb)[0] == 200
    slots.try_acquire("candidate-1")
    slots.try_acquire("candidate-2")
    code, _, body = _get(lb)
    assert code == 404 and json.loads(body)["status"] == "full"
    ready["value"] = False
    assert _get(lb)[0] == 503
    ready["value"] = True
    slots.release("candidate-1")
    assert _get(lb)[0] == 200


def test_health_endpoint_serves_nothing_else(health: Any) -> None:
    server, _, _ = health
    base = f"http://127.0.0.1:{server.port}"
    for path in ("/", "/healthz", "/health/x", "/_stcore/health", "/../etc/passwd"):
        code, _, body = _get(base + path)
        assert code == 404 and body == b"not found\n", path
    code, _, _ = _get(base + "/health", "POST")
    assert code == 501  # only GET and HEAD are served
    assert _get(base + "/health?check=1")[0] == 200


def test_a_failing_probe_reads_as_degraded_never_as_healthy() -> None:
    def broken() -> SlotUsage:
        raise RuntimeError("boom")

    server = HealthServer("127.0.0.1", 0, broken, lambda: True, "n").start()
    try:
        code, _, body = _get(server.url)
        assert code == 503 and json.loads(body) == {"status": "degraded", "node": "n"}
    finally:
        server.stop()


def test_health_report_status_rules() -> None:
    assert health_report(SlotUsage(0, 1), True, "n")[0] == 200
    assert health_report(SlotUsage(1, 1), True, "n") == (503, {"status": "full", "live_sessions": 1, "capacity": 1,
                                                              "free": 0, "workers_ready": True, "node": "n"})
    assert health_report(SlotUsage(0, 1), False, "n")[1]["status"] == "degraded"
    assert health_report(SlotUsage(3, 2), True, "n")[1]["free"] == 0  # capacity lowered under running sessions


def test_a_taken_health_port_is_a_clear_os_error() -> None:
    first = HealthServer("127.0.0.1", 0, lambda: SlotUsage(0, 1), lambda: True, "n")
    try:
        with pytest.raises(OSError):
            HealthServer("127.0.0.1", first.port, lambda: SlotUsage(0, 1), lambda: True, "n")
    finally:
        first.stop()  # never started: closes without waiting on a serve loop


# ----------------------------------------------------------------------------- the real app


def _health(port: int) -> tuple[int, dict[str, Any]]:
    code, _, body = _get(f"http://127.0.0.1:{port}/health")
    return code, json.loads(body)


def _to_device_check(page: Any, name: str) -> None:
    """Consent, one question, live: Next reaches the device check (or the busy message)."""
    page.get_by_text("I understand and agree").click()
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Your name").fill(name)
    page.get_by_label("Your name").press("Enter")
    page.get_by_label("How many questions").fill("1")
    page.get_by_label("How many questions").press("Enter")
    wait_script_done(page)
    page.get_by_role("button", name="Next").click()


@pytest.mark.e2e
def test_a_candidate_past_capacity_sees_the_busy_message_and_no_camera(tmp_path: Any, artifacts: Any) -> None:
    health_port = free_port()
    env = {"MOCKAI_MAX_LIVE_SESSIONS": "1", "MOCKAI_HEALTH_PORT": str(health_port), "MOCKAI_NODE_NAME": "node-e2e",
           "MOCKAI_LIVE_SLOT_TIMEOUT_SECONDS": "10", "MOCKAI_LIVE_SLOT_HEARTBEAT_SECONDS": "2"}
    with running_app(tmp_path / "app", env) as app, sync_playwright() as p:
        browser = launch_chromium(p)
        first_ctx, second_ctx = browser.new_context(), browser.new_context()
        first, second = first_ctx.new_page(), second_ctx.new_page()
        for page in (first, second):
            page.goto(app.url)
            page.wait_for_selector("h1", timeout=60_000)
        code, body = _health(health_port)
        assert body["capacity"] == 1 and body["live_sessions"] == 0 and body["node"] == "node-e2e"
        _to_device_check(first, "First Candidate")
        wait_text(first, "Device check")
        first.locator(WEBRTC).wait_for(state="attached", timeout=60_000)  # the camera widget is drawn
        wait_text(first, r"Live sessions on this server: 1 / 1")
        wait_until(lambda: _health(health_port)[1]["workers_ready"], "workers ready", 300)
        assert _health(health_port) == (503, {"status": "full", "live_sessions": 1, "capacity": 1, "free": 0,
                                              "workers_ready": True, "node": "node-e2e"})

        _to_device_check(second, "Second Candidate")
        wait_text(second, r"All interview slots on this server are busy \(1 of 1 in use\)\. "
                          r"Try again in about \d+ minutes?\.")
        wait_script_done(second)
        shot(second, artifacts, "capacity_busy")
        assert second.locator(WEBRTC).count() == 0  # no camera asked for
        assert "Device check" not in second.inner_text("body")

        first_ctx.close()  # the first tab closes without ending: its slot expires, the node is free again
        wait_until(lambda: _health(health_port) == (200, {"status": "ok", "live_sessions": 0, "capacity": 1,
                                                          "free": 1, "workers_ready": True, "node": "node-e2e"}),
                   "the closed tab's slot to expire", 120)
        second.get_by_role("button", name="Try again").click()
        wait_text(second, "Device check")
        second.locator(WEBRTC).wait_for(state="attached", timeout=60_000)
        assert _health(health_port)[1]["live_sessions"] == 1
        browser.close()
    assert "Traceback" not in app.log()
