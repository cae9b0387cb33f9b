"""Sidebar status banners (database and journal, analysis engine) and the held-answer note."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import streamlit as st

from pipeline.store import Store

if TYPE_CHECKING:
    from sidecar.supervisor import Sidecar


def show_storage_status(store: Store) -> None:
    """Sidebar: the database as a real ping sees it (cached a moment), and the journal's state."""
    db = store.db  # an access: a dead embedded server is started again here
    status = store.writer.status()
    if db is None:
        st.error(
            f"Database unreachable right now. Recording continues into the local journal "
            f"({status.pending_ops} writes waiting) and is saved once it is back.",
            icon=":material/cloud_off:",
        )
    elif status.last_error:  # driver text stays in the log: it names hosts and ports
        st.warning(f"Database writes are being retried ({status.pending_ops} waiting); nothing is lost meanwhile.",
                   icon=":material/sync_problem:")
    else:
        st.caption(f":material/database: Database connected · {status.pending_ops} writes pending")
    if status.journal_full:
        st.error("The local journal cannot take new writes (the database has been away too long, or the "
                 "server's disk is full): new recordings cannot be kept until that is resolved.",
                 icon=":material/hard_drive:")
    if status.quarantined_lines:
        st.warning(f"{status.quarantined_lines} unreadable journal lines were set aside (details in the server log).",
                   icon=":material/report:")


def held_answer_note(result: dict[str, Any]) -> str | None:
    """The candidate's note for an answer result the journal refused (a worker holds it in memory)."""
    if not result.get("held"):
        return None
    cause = "the server's disk is full" if result.get("journal_full") else "the server could not write it"
    return (f"Your answer is analysed but could not be saved yet ({cause}); it is kept in memory and will be "
            "saved when space is back.")


@st.fragment(run_every=2.0)
def show_sidecar_status(sidecar: Sidecar | None) -> None:
    if sidecar is None:
        st.caption(":material/memory: Analysis engine off on this server")
        return
    status = sidecar.status()
    held, dropped = status.get("journal_backlog", 0), status.get("journal_dropped", 0)
    if held or status.get("journal_error"):  # the workers go on; what they produce waits in memory
        cause = "the server's disk is full" if status.get("journal_full") else "the server cannot write to its disk"
        st.warning(f"Analysis results cannot be saved right now ({cause}): {held} kept in memory, saved when "
                   "space is back." + (f" {dropped} video samples were dropped." if dropped else ""),
                   icon=":material/hard_drive:")
    if status["ready"]:
        st.caption(":material/memory: Analysis engine ready")
        return
    states = ", ".join(f"{n}: {w['state']}" for n, w in status["workers"].items())
    if any(w["state"] == "failed" for w in status["workers"].values()):
        st.error(f"Analysis engine failed to start ({states}).", icon=":material/error:")
    else:
        st.info(f"Analysis engine warming up models… ({states})", icon=":material/hourglass_top:")
