"""Admission control for live sessions on one node: its capacity from the measured cost per live
session and its cores, and `LiveSlots`, the thread-safe registry of the live sessions it serves."""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.settings_sections import CapacitySettings


def node_capacity(options: CapacitySettings) -> int:
    """Live sessions this node analyses at full rate: ``max_live_sessions`` when set, else
    floor(node_cores / cores_per_live_session); never below 1."""
    if options.max_live_sessions > 0:
        return options.max_live_sessions
    # The small epsilon keeps 0.7 / 0.35 == 2, not 1.9999999999999998 floored to 1.
    return max(1, math.floor(options.node_cores / options.cores_per_live_session + 1e-9))


def node_id(options: CapacitySettings, port: int | None) -> str:
    """This node's name for the load balancer: ``node_name``, else hostname:port."""
    if options.node_name.strip():
        return options.node_name.strip()
    host = socket.gethostname()
    return f"{host}:{port}" if port else host


@dataclass(frozen=True)
class Admission:
    """The answer to a request for a live slot; ``message`` is the candidate's text when refused."""

    granted: bool
    in_use: int
    capacity: int
    wait_minutes: int | None = None
    message: str | None = None


def remaining_interview_seconds(question_seconds: Sequence[int], index: int, options: CapacitySettings) -> float:
    """How long a live interview at question ``index`` should still take: the suggested length of
    each question left plus ``live_question_overhead_seconds`` for each (start, scoring, feedback)."""
    left = question_seconds[max(0, index):]
    return float(sum(left) + len(left) * options.live_question_overhead_seconds)


@dataclass
class _Slot:
    touched: float
    ends_at: float  # when this session is expected to end, on the registry's clock


@dataclass(frozen=True)
class SlotUsage:
    """Live sessions in use and the node's capacity, for the sidebar and the health endpoint."""

    in_use: int
    capacity: int

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.in_use)


def busy_message(in_use: int, capacity: int, wait_minutes: int) -> str:
    unit = "minute" if wait_minutes == 1 else "minutes"
    return (f"All interview slots on this server are busy ({in_use} of {capacity} in use). "
            f"Try again in about {wait_minutes} {unit}.")


class LiveSlots:
    """Live sessions held on this node, keyed by the interview session id.

    A session acquires a slot before its camera starts and releases it when its stream stops or
    the interview ends; while its tab is open it refreshes the slot (``touch``), and a slot not
    refreshed for ``live_slot_timeout_seconds`` (a closed tab) is freed. Acquiring again with the
    same id is idempotent: a session already holding a slot is never refused, whatever the load,
    so the sessions already running never lose theirs. ``clock`` is injectable for tests.
    """

    def __init__(self, options: CapacitySettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.capacity = node_capacity(options)
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}

    def _expire(self, now: float) -> None:
        timeout = self.options.live_slot_timeout_seconds
        for sid in [s for s, slot in self._slots.items() if now - slot.touched > timeout]:
            del self._slots[sid]

    def try_acquire(self, session_id: str, remaining_s: float | None = None) -> Admission:
        """A slot for ``session_id`` (refreshed if it has one), or a refusal saying how long to wait.
        ``remaining_s``: how long this session should still last (None: live_session_typical_minutes
        for a new slot, unchanged for a held one)."""
        if not session_id:
            raise ValueError("a live slot needs a session id")
        with self._lock:
            now = self._clock()
            self._expire(now)
            held = self._slots.get(session_id)
            if held is not None:
                self._refresh(held, now, remaining_s)
                return Admission(True, len(self._slots), self.capacity)
            if len(self._slots) < self.capacity:
                typical_s = self.options.live_session_typical_minutes * 60
                self._slots[session_id] = _Slot(now, now + (typical_s if remaining_s is None else max(0.0, remaining_s)))
                return Admission(True, len(self._slots), self.capacity)
            wait = self._wait_minutes(now)
            in_use = len(self._slots)
        return Admission(False, in_use, self.capacity, wait, busy_message(in_use, self.capacity, wait))

    @staticmethod
    def _refresh(slot: _Slot, now: float, remaining_s: float | None) -> None:
        slot.touched = now
        if remaining_s is not None:
            slot.ends_at = now + max(0.0, remaining_s)

    def _wait_minutes(self, now: float) -> int:
        """Minutes until the running session closest to its expected end should finish (at least 1).
        A session past its expected end counts as finishing now (the 1-minute floor)."""
        remaining = min(max(0.0, slot.ends_at - now) for slot in self._slots.values())
        return max(1, math.ceil(remaining / 60))

    def touch(self, session_id: str, remaining_s: float | None = None) -> bool:
        """Refresh a held slot (its tab is still open), with how long it should still last when known;
        False when it holds none (expired or released)."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            slot = self._slots.get(session_id)
            if slot is None:
                return False
            self._refresh(slot, now, remaining_s)
            return True

    def release(self, session_id: str) -> bool:
        """Free the slot of ``session_id``; False when it held none."""
        with self._lock:
            return self._slots.pop(session_id, None) is not None

    def holds(self, session_id: str) -> bool:
        with self._lock:
            self._expire(self._clock())
            return session_id in self._slots

    def usage(self) -> SlotUsage:
        """Live sessions in use now (expired slots freed first) and the capacity."""
        with self._lock:
            self._expire(self._clock())
            return SlotUsage(len(self._slots), self.capacity)
