"""Sessions page (coach): browse, filter and compare sessions, a candidate's progress, delete.

Layout only: every query and number comes from pipeline.queries and pipeline.progress.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import streamlit as st
from pymongo.errors import PyMongoError

from pipeline.auth import session_access_filter
from pipeline.card import session_label
from pipeline.export import delete_session
from pipeline.progress import (
    METRICS,
    candidate_progress,
    compare_sessions,
    comparison_figure,
    format_value,
    progress_figure,
)
from pipeline.queries import (
    GRADE_BANDS,
    NO_BAND,
    PAGE_SIZE,
    SESSION_SORTS,
    SessionFilters,
    find_visible_session,
    list_session_page,
    session_filter_options,
)
from pipeline.safe_text import md
from pipeline.settings import get_settings
from pipeline.whatif import page_answers, whatif_rows
from ui.navigation import run_inside_app
from ui.session import error_text, get_store, require_user
from ui.thresholds import threshold_panel

run_inside_app()

ALL = "All"


@st.cache_data(ttl=120, max_entries=64, show_spinner=False)
def filter_options(db_name: str, access_key: str, _db: Any, _access: dict[str, Any] | None) -> dict[str, list[str]]:
    # Reading every session's name is a full scan: shared for two minutes (cleared on delete).
    return session_filter_options(_db, _access)


def _opt(value: str) -> str | None:
    return None if value == ALL else value


st.title("Sessions")
st.write("Every interview session: candidate, date, role, answers, overall grade and flags. "
         "Filter, sort and search them, follow a candidate's progress, or compare two sessions.")
store = get_store()
db = store.db
if db is None:
    st.warning("Sessions cannot be listed while the database is unreachable.")
    st.stop()
user = require_user(("admin", "coach", "researcher", "candidate"))
# Researchers and admins: the sidebar what-if re-grades the listed sessions in memory (nothing is written).
whatif = threshold_panel(user, get_settings())
access = session_access_filter(user, db)

try:
    options = filter_options(db.name, repr(access), db, access)
except PyMongoError as exc:
    st.error(f"Could not read sessions from the database: {error_text(exc)}")
    st.stop()

tab_list, tab_progress, tab_compare = st.tabs(["Sessions", "Progress", "Compare two sessions"])

# --------------------------------------------------------------------------- list
with tab_list:
    cols = st.columns([2, 2, 2, 1.4])
    search = cols[0].text_input("Search candidate or role", key="search", max_chars=100,
                                placeholder="start of a name or role", help="Case-insensitive; matches the start "
                                "of the candidate's or role's name, or of a word in it. Plain text only.")
    candidate = cols[1].selectbox("Candidate", [ALL, *options["candidates"]], key="candidate")
    role = cols[2].selectbox("Role", [ALL, *options["roles"]], key="role")
    band = cols[3].selectbox("Grade band", [ALL, *GRADE_BANDS, NO_BAND], key="band")
    cols = st.columns([2, 2, 1.4, 2.6])
    dates = cols[0].date_input("Date range", value=(), key="dates", format="YYYY-MM-DD",
                               help="Sessions started on these days (UTC); leave empty for all.")
    sort = cols[1].selectbox("Sort by", list(SESSION_SORTS), key="sort", format_func=str.capitalize)
    descending = cols[2].toggle("Descending", value=sort != "candidate", key=f"desc-{sort}",
                                help="Newest, best or Z first when on.")
    picked: tuple[date, ...] = tuple(d for d in (dates if isinstance(dates, tuple | list) else (dates,)) if d)
    filters = SessionFilters(
        candidate=_opt(candidate), role=_opt(role), band=_opt(band), search=search or None,
        date_from=picked[0] if picked else None, date_to=picked[-1] if picked else None,
    )
    signature = repr((filters, sort, descending))
    if st.session_state.get("list_signature") != signature:  # new filters: back to the first page
        st.session_state["list_signature"] = signature
        st.session_state["page"] = 0
    page_no = int(st.session_state.get("page", 0))
    try:
        page = list_session_page(db, filters, sort=sort, descending=descending, page=page_no, page_size=PAGE_SIZE,
                                 access=access)
    except PyMongoError as exc:
        st.error(f"Could not read sessions from the database: {error_text(exc)}")
        st.stop()
    if not page.rows and page_no == 0:
        st.info("No sessions match these filters." if filters != SessionFilters()
                else "No sessions yet. Record one on the Interview page.")
    else:
        rows: list[dict[str, Any]] = list(page.rows)
        changes: list[str] = []
        if whatif is not None:
            try:
                regraded = whatif_rows(rows, page_answers(db, [str(r["id"]) for r in rows]), whatif)
            except PyMongoError as exc:
                st.error(f"Could not read the answers for the what-if: {error_text(exc)}")
                st.stop()
            rows = [r for r, _ in regraded]
            changes = [c.text() for _, c in regraded]
            moved = sum(c.changed for _, c in regraded)
            st.warning(f"**What-if, not saved:** {moved} of {len(rows)} sessions on this page change grade or "
                       "band. Sorting and filters still use the stored grades.", icon=":material/science:")
        table = [{
            "candidate": r.get("candidate"), "date": r.get("started_at"), "role": r.get("role"),
            "answers": r.get("answers"), "grade": r.get("grade"), "band": r.get("band"),
            "flags": ", ".join(map(str, r.get("flags") or [])), "status": r.get("status"),
            "report": f"report?session={r['id']}",
            **({"what-if": changes[i]} if changes else {}),
        } for i, r in enumerate(rows)]
        st.dataframe(table, hide_index=True, width="stretch", column_config={
            "date": st.column_config.DatetimeColumn("date", format="YYYY-MM-DD HH:mm"),
            "grade": st.column_config.ProgressColumn("grade", min_value=0.0, max_value=1.0, format="percent"),
            "report": st.column_config.LinkColumn("report", display_text="open report"),
        })
    nav = st.columns([1, 2, 1])
    if nav[0].button("← Previous", key="prev", disabled=page_no == 0):
        st.session_state["page"] = page_no - 1
        st.rerun()
    last = page.first + len(page.rows) - 1
    nav[1].caption(f"Page {page_no + 1} · sessions {page.first}–{last}" if page.rows else f"Page {page_no + 1} · empty")
    if nav[2].button("Next →", key="next", disabled=not page.has_next):
        st.session_state["page"] = page_no + 1
        st.rerun()

    with st.expander("Delete a session", icon=":material/delete:"):
        st.write("Deletes the session with every answer, transcript, frame sample and share link of it. "
                 "This cannot be undone.")
        if st.session_state.get("deleted_msg"):
            st.success(st.session_state.pop("deleted_msg"))
        labels = {r["id"]: session_label(r) for r in page.rows}
        target = st.selectbox("Session to delete", list(labels), format_func=labels.get, key="delete_target",
                              index=None, placeholder="pick a session on this page")
        sure = st.checkbox("Yes, delete it and everything recorded in it", key="delete_sure",
                           disabled=target is None)
        if st.button("Delete session", type="primary", key="delete_button", disabled=not (target and sure)):
            try:
                if target and find_visible_session(db, target, access) is not None:
                    gone = delete_session(db, target, store.writer)  # journaled: ordered with every other write
                    st.cache_data.clear()  # filter options and cached report frames
                    st.session_state.pop("delete_sure", None)
                    st.session_state["deleted_msg"] = (
                        f"Deleted session {md(target)}: " + ", ".join(f"{n} {k}" for k, n in gone.items()) + "."
                        if gone is not None else f"Deleting session {md(target)}: the database is slow to answer; "
                        "the delete is kept in the journal and finishes once it does.")
                    st.rerun()  # the list without it
                else:
                    st.error("That session is not there any more, or you may not delete it.")
            except PyMongoError as exc:
                st.error(f"Could not delete the session: {error_text(exc)}")

# --------------------------------------------------------------------------- progress
with tab_progress:
    st.write("A candidate's sessions over time: grade, pace, fillers and eye contact per session, "
             "or per question type.")
    who = st.selectbox("Candidate", options["candidates"], key="progress_candidate", index=None,
                       placeholder="pick a candidate")
    if who:
        try:
            progress = candidate_progress(db, who, access)
        except PyMongoError as exc:
            st.error(f"Could not read the candidate's sessions: {error_text(exc)}")
            progress = None
        if progress is not None and not progress.sessions:
            st.info(f"No sessions of {md(who)} to show.")
        elif progress is not None:
            by_type = st.toggle("Per question type", key="progress_by_type")
            rows = progress.by_type if by_type else progress.sessions
            st.caption(f"{len(progress.sessions)} sessions, oldest first. A missing value is a gap, never 0.")
            grid = st.columns(2)
            for i, metric in enumerate(METRICS):
                grid[i % 2].plotly_chart(progress_figure(rows, metric, by="type" if by_type else None),
                                         width="stretch", key=f"progress-{metric}", config={"displaylogo": False})

# --------------------------------------------------------------------------- compare
with tab_compare:
    st.write("Two sessions side by side (any two on the current page of the list).")
    labels = {r["id"]: session_label(r) for r in page.rows}
    ids = list(labels)
    if len(ids) < 2:
        st.info("The list needs at least two sessions to compare.")
    else:
        pick = st.columns(2)
        first = pick[0].selectbox("First session", ids, index=1, format_func=labels.get, key="cmp_first")
        second = pick[1].selectbox("Second session", ids, index=0, format_func=labels.get, key="cmp_second")
        try:
            table = compare_sessions(db, first, second, access)
        except PyMongoError as exc:
            st.error(f"Could not read the sessions: {error_text(exc)}")
            table = None
        if table is None:
            st.warning("One of these sessions is not there any more.")
        else:
            st.dataframe([{
                "metric": r["label"], "first": format_value(r["first"], r["format"]),
                "second": format_value(r["second"], r["format"]),
                "change": ("+" if (r["change"] or 0) > 0 else "") + format_value(r["change"], r["format"]),
            } for r in table], hide_index=True, width="stretch")
            st.plotly_chart(comparison_figure(table, "first", "second"), width="stretch", key="compare-chart",
                            config={"displaylogo": False})
