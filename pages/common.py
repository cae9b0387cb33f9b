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
