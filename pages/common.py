"""Streamlit glue shared by the pages: cached resources and status banners."""

from __future__ import annotations

import streamlit as st

from pipeline.settings import get_settings
from pipeline.store import Store


@st.cache_resource(show_spinner="Connecting to the database…")
def get_store() -> Store:
    # One per server process: the writer and its journal are shared by all browser sessions.
    return Store(get_settings())


def show_storage_status(store: Store) -> None:
    if store.db is None:
        st.error(
            f"Database unreachable — {store.error}. Recording continues into the local journal "
            f"({store.writer.status().pending_ops} writes waiting) and is replayed when it is back.",
            icon=":material/cloud_off:",
        )
    else:
        status = store.writer.status()
        if status.last_error:
            st.warning(f"Database writes are being retried: {status.last_error}", icon=":material/sync_problem:")
        else:
            st.caption(f":material/database: Database connected · {status.pending_ops} writes pending")


@st.cache_resource(show_spinner=False)
def get_sidecar():  # -> sidecar.supervisor.Sidecar
    """The sidecar, started once per server and shared by every session (models stay warm)."""
    from sidecar.supervisor import Sidecar

    settings = get_settings()
    if not settings.sidecar_enabled:
        return None
    return Sidecar(settings, store=True).start()


@st.fragment(run_every=2.0)
def show_sidecar_status(sidecar) -> None:
    if sidecar is None:
        st.caption(":material/memory: Analysis engine off on this server")
        return
    status = sidecar.status()
    if status["ready"]:
        st.caption(":material/memory: Analysis engine ready")
        return
    states = ", ".join(f"{n}: {w['state']}" for n, w in status["workers"].items())
    if any(w["state"] == "failed" for w in status["workers"].values()):
        st.error(f"Analysis engine failed to start ({states}).", icon=":material/error:")
    else:
        st.info(f"Analysis engine warming up models… ({states})", icon=":material/hourglass_top:")
