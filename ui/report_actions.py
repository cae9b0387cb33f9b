"""The report's export, share and delete panel for one session (Streamlit); the work itself is
pipeline.export's, through the app's journaled writer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import streamlit as st
from pymongo.database import Database
from pymongo.errors import PyMongoError

from pipeline.export import (
    SHARE_MAX_DAYS,
    SessionData,
    create_share_link,
    delete_session,
    export_filename,
    list_shares,
    load_session,
    revoke_shares,
    samples_csv,
    samples_json,
    session_html,
)
from pipeline.report import ReportOptions
from pipeline.store import Store
from ui.session import error_text


def show_session_actions(db: Database[dict[str, Any]], store: Store, session: Mapping[str, Any], session_id: str,
                         user: Mapping[str, Any] | None, options: ReportOptions) -> None:
    """Downloads (HTML report, CSV and JSON samples), read-only share links, and delete."""
    st.divider()
    st.subheader("Export, share, delete", anchor=False)

    def _export(render: Callable[[SessionData], str]) -> Callable[[], str]:
        # read when a download is clicked, not on every rerun
        def build() -> str:
            data = load_session(db, session_id)
            return render(data) if data is not None else "This session no longer exists.\n"
        return build

    _html = _export(lambda data: session_html(data, options))
    _csv = _export(samples_csv)
    _json = _export(samples_json)

    cols = st.columns(3)
    cols[0].download_button("Report (HTML, opens offline)", _html, file_name=export_filename(session, "html"),
                            mime="text/html", key="export_html", on_click="ignore", icon=":material/download:")
    cols[1].download_button("Samples (CSV)", _csv, file_name=export_filename(session, "csv"), mime="text/csv",
                            key="export_csv", on_click="ignore", icon=":material/table:")
    cols[2].download_button("Samples (JSON)", _json, file_name=export_filename(session, "json"),
                            mime="application/json", key="export_json", on_click="ignore", icon=":material/data_object:")

    with st.expander("Share a read-only link", icon=":material/link:"):
        days = st.number_input("Valid for (days)", 1, SHARE_MAX_DAYS, 7, key="share_days")
        if st.button("Create link", key="share_create"):
            try:
                token = create_share_link(db, session_id, days, created_by=(user or {}).get("username"))
                st.session_state["share_link"] = (session_id, f"report?share={token}")
            except (PyMongoError, ValueError) as exc:
                st.error(f"Could not create the link: {error_text(exc)}")
        made = st.session_state.get("share_link")
        if made and made[0] == session_id:
            st.caption("Anyone with this link sees this session's report, read-only, until it expires "
                       "(append it to this app's address):")
            st.code(made[1], language=None)
        live = list_shares(db, session_id)
        if live:
            st.caption(f"{len(live)} live link(s); the last expires {max(s['expires_at'] for s in live):%Y-%m-%d}.")
            if st.button("Revoke every link to this session", key="share_revoke"):
                revoke_shares(db, session_id)
                st.session_state.pop("share_link", None)
                st.rerun()

    with st.expander("Delete this session", icon=":material/delete:"):
        st.write("Deletes the session with every answer, transcript, frame sample and share link of it. "
                 "This cannot be undone.")
        sure = st.checkbox("Yes, delete it and everything recorded in it", key="report_delete_sure")
        if st.button("Delete session", type="primary", key="report_delete", disabled=not sure):
            try:
                gone = delete_session(db, session_id, store.writer)  # journaled: ordered with every other write
            except PyMongoError as exc:
                st.error(f"Could not delete the session: {error_text(exc)}")
            else:
                st.cache_data.clear()
                st.query_params.clear()
                st.success("Deleted: " + ", ".join(f"{n} {k}" for k, n in gone.items()) + "." if gone is not None
                           else "Deleting: the database is slow to answer; the delete is kept in the journal and "
                           "finishes once it does.")
                st.stop()
