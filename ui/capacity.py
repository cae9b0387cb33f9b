"""Admission of live sessions on this server (one `LiveSlots` per process), the health endpoint
started next to the sidecar, and the sidebar line that also keeps an open tab's slot fresh."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import streamlit as st

from pipeline.capacity import LiveSlots, node_id, remaining_interview_seconds
from pipeline.safe_text import md
from pipeline.settings import get_settings
from ui.interview import STATE_KEY, InterviewState

if TYPE_CHECKING:
    from sidecar.health import HealthServer
    from sidecar.supervisor import Sidecar

log = logging.getLogger(__name__)

SLOT_KEY = "live_slot"  # st.session_state key: the interview session id this tab holds a live slot for
LIVE_STEPS = ("device", "interview")  # the Interview steps during which the camera and microphone run


@st.cache_resource(show_spinner=False)
def get_live_slots() -> LiveSlots:
    """The live sessions of this server process, shared by every browser session."""
    return LiveSlots(get_settings().capacity)


def _stop_health(server: HealthServer | None) -> None:
    if server is not None:
        server.stop()


@st.cache_resource(show_spinner=False, on_release=_stop_health)  # cleared (tests): the port is freed
def start_health_endpoint(_sidecar: Sidecar | None) -> HealthServer | None:
    """GET /health for a load balancer, started once per server process (None when switched off
    with MOCKAI_HEALTH_PORT=0 or when the port cannot be bound: the app runs on without it)."""
    from sidecar.health import HealthServer

    options = get_settings().capacity
    app_port = int(st.get_option("server.port") or 8501)
    port = app_port + 1 if options.health_port is None else options.health_port
    if port == 0:
        return None
    host = options.health_address.strip() or str(st.get_option("server.address") or "") or "127.0.0.1"
    slots = get_live_slots()
    try:
        server = HealthServer(host, port, slots.usage, lambda: _sidecar is not None and _sidecar.ready,
                              node_id(options, app_port))
    except OSError as exc:
        log.warning("health endpoint not started on %s:%s: %s", host, port, exc)
        return None
    return server.start()


def _remaining_s(state: InterviewState) -> float | None:
    """How long this tab's interview should still take, from its questions' suggested lengths."""
    questions = state.get("questions") or []
    if not questions:
        return None
    return remaining_interview_seconds([int(q.get("seconds", 0)) for q in questions], state.get("index", 0),
                                       get_settings().capacity)


def admit_live(state: InterviewState) -> bool:
    """A live slot for this interview session before its camera starts (refreshed if held); when
    the node is full, the busy message with its wait estimate and a retry button instead."""
    session_id = state["session_id"]
    slots = get_live_slots()
    previous = st.session_state.get(SLOT_KEY)
    if previous and previous != session_id:  # this tab started another session: its old slot goes first
        slots.release(previous)
        st.session_state.pop(SLOT_KEY, None)
    admission = slots.try_acquire(session_id, _remaining_s(state))
    if admission.granted:
        st.session_state[SLOT_KEY] = session_id
        return True
    st.warning(md(admission.message), icon=":material/hourglass_top:")
    st.caption("Candidates already in an interview keep their slot until they finish; uploading recorded "
               "answers is never refused.")
    st.button("Try again", key="live_slot_retry")  # a click runs the page again, asking once more
    return False


def release_live() -> None:
    """Free this tab's live slot (its interview ended or left the live steps)."""
    session_id = st.session_state.pop(SLOT_KEY, None)
    if session_id:
        get_live_slots().release(session_id)


def _live_sessions_line() -> None:
    session_id = st.session_state.get(SLOT_KEY)
    if session_id:
        state: InterviewState = st.session_state.get(STATE_KEY, {})
        if state.get("step") not in LIVE_STEPS:  # summary reached, or a new session: nothing live any more
            release_live()
        else:  # this tab is open: its slot stays, with how long its interview should still take
            slots, remaining = get_live_slots(), _remaining_s(state)
            if not slots.touch(session_id, remaining):  # expired while the tab slept: back if there is room
                slots.try_acquire(session_id, remaining)
    usage = get_live_slots().usage()
    st.caption(f":material/groups: Live sessions on this server: {usage.in_use} / {usage.capacity}")


def show_live_sessions(sidecar: Sidecar | None) -> None:
    """Sidebar: live sessions / capacity, redrawn every heartbeat; each redraw refreshes this tab's
    slot, so a closed tab stops refreshing and its slot expires."""
    if sidecar is None:
        return  # no live sessions on a server without the analysis engine
    st.fragment(_live_sessions_line, run_every=get_settings().capacity.live_slot_heartbeat_seconds)()
