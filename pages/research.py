"""Research page: tune thresholds, preview their effect on stored sessions, save them as
versioned profiles, apply a profile, and look at how metrics relate to the grade.

Layout only: validation, re-scoring and figures live in pipeline.profiles, pipeline.rescore
and pipeline.calibration.
"""

from pathlib import Path
from typing import Any

import streamlit as st
from pymongo.errors import PyMongoError

from pipeline import auth
from pipeline.calibration import calibration_figure, calibration_view
from pipeline.profiles import (
    ProfileError,
    list_profiles,
    load_profile,
    parse_words,
    save_profile,
    settings_with,
    threshold_specs,
)
from pipeline.rescore import effect_figure, mohler_effect, rescore
from pipeline.safe_text import md
from pipeline.settings import get_settings, settings_table
from ui.navigation import run_inside_app
from ui.session import error_text, get_store, require_user
from ui.thresholds import HANDOFF

run_inside_app()

MOHLER = Path(__file__).resolve().parents[2] / "shared" / "data" / "grading" / "mohler_dataset_edited.csv"
GROUPS = {"grading": "Grading", "speech": "Speech", "report": "Report advice",
          "capture": "Capture (applies to new recordings only)"}

st.title("Research")
st.write("Thresholds that drive scoring. Tune them, preview the effect on stored sessions, save them as "
         "versioned profiles, and re-score stored sessions without re-running any model.")
settings = get_settings()
store = get_store()
db = store.db
if db is None:
    st.warning("Profiles and re-scoring need the database, which is unreachable. Current settings:")
    st.dataframe(settings_table(settings), hide_index=True, width="stretch")
    st.stop()
user = require_user(("admin", "coach", "researcher"))
# Preview, apply and calibration all see only what this user may: a coach re-scores only the
# sessions of their own candidates and those assigned to them (pipeline.auth).
access = auth.session_access_filter(user, db)

state = st.session_state


def load_into_form(values: dict[str, Any]) -> None:
    """Put a profile's values into the form's widgets (before they are drawn)."""
    for spec in threshold_specs(settings, values):
        if spec.kind == "words":
            state[f"thr_{spec.name}"] = ", ".join(spec.value)
        elif spec.kind == "cutoffs":
            for i, v in enumerate(spec.value):
                state[f"thr_{spec.name}_{i}"] = float(v)
        else:
            state[f"thr_{spec.name}"] = spec.value


def form_values() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in threshold_specs(settings):
        if spec.kind == "words":
            out[spec.name] = parse_words(state[f"thr_{spec.name}"])
        elif spec.kind == "cutoffs":
            out[spec.name] = tuple(state[f"thr_{spec.name}_{i}"] for i in range(len(spec.value)))
        else:
            out[spec.name] = state[f"thr_{spec.name}"]
    return out


if "thr_loaded" not in state:
    load_into_form({})
    state.thr_loaded = "current settings"
# The sidebar what-if's "Save as profile" / "Preview on stored sessions" (ui.thresholds) hands its values here.
handoff = state.pop(HANDOFF, None)
if isinstance(handoff, dict) and isinstance(handoff.get("values"), dict):
    load_into_form(handoff["values"])
    state.thr_loaded = "the sidebar what-if"

try:
    profiles = list_profiles(db)
    reachable = db.sessions.count_documents(access if access is not None else {})
except PyMongoError as exc:
    st.error(f"Could not read profiles: {error_text(exc)}")
    st.stop()

scope = ("every stored session (admin)" if access is None
         else "the sessions of your candidates and those assigned to you")
st.info(f"You may preview, re-score and calibrate **{reachable}** stored session{'s' if reachable != 1 else ''}: "
        f"{scope}.", icon=":material/group:")
tab_tune, tab_cal = st.tabs(["Thresholds and profiles", "Calibration"])

with tab_tune:
    labels = {f"{p['name']} v{p['version']}": (p["name"], p["version"]) for p in profiles}
    cols = st.columns([3, 1, 1])
    picked = cols[0].selectbox("Saved profiles", list(labels) or ["(none saved yet)"], key="profile_pick",
                               disabled=not labels)
    if cols[1].button("Load into form", key="profile_load", disabled=not labels, width="stretch"):
        prof = load_profile(db, *labels[picked])
        if prof is not None:
            load_into_form(prof["thresholds"])
            state.thr_loaded = picked
            st.rerun()
    if cols[2].button("Reset to settings", key="profile_reset", width="stretch"):
        load_into_form({})
        state.thr_loaded = "current settings"
        st.rerun()
    st.caption(f"Form values from: {md(state.thr_loaded)}")

    with st.form("thresholds"):
        for group, title in GROUPS.items():
            st.markdown(f"**{title}**")
            specs = [s for s in threshold_specs(settings) if s.group == group]
            grid = st.columns(3)
            for i, spec in enumerate(specs):
                box = grid[i % 3]
                key = f"thr_{spec.name}"
                if spec.kind == "words":
                    box.text_area(spec.name, key=key, help=spec.help + " (comma separated)", height=80)
                elif spec.kind == "cutoffs":
                    box.caption(f"{spec.name}: weak | fair | good | strong", help=spec.help)
                    sub = box.columns(len(spec.value))
                    for j in range(len(spec.value)):
                        sub[j].number_input(f"cut-off {j + 1}", key=f"{key}_{j}", min_value=0.0, max_value=1.0,
                                            step=0.05, format="%.2f", help=spec.help)
                elif spec.kind == "int":
                    box.number_input(spec.name, key=key, step=1, help=spec.help,
                                     min_value=None if spec.min_value is None else int(spec.min_value),
                                     max_value=None if spec.max_value is None else int(spec.max_value))
                else:
                    box.number_input(spec.name, key=key, step=0.01, format="%.3f", help=spec.help,
                                     min_value=None if spec.min_value is None else float(spec.min_value),
                                     max_value=None if spec.max_value is None else float(spec.max_value))
        st.divider()
        cols = st.columns([2, 2, 1])
        limit = cols[0].number_input("Preview on the most recent sessions (0 = all)", min_value=0, value=1000,
                                     step=100, key="preview_limit")
        name = cols[1].text_input("Profile name", key="profile_name", max_chars=100)
        author = cols[2].text_input("Author", key="profile_author", max_chars=200)
        b1, b2 = st.columns(2)
        preview = b1.form_submit_button("Preview effect", type="primary", key="preview", width="stretch")
        save = b2.form_submit_button("Save as profile", key="save", width="stretch")

    if isinstance(handoff, dict) and handoff.get("action") == "save":
        st.info("The sidebar's values are in the form: name the profile and press **Save as profile**.",
                icon=":material/save:")
    preview = preview or (isinstance(handoff, dict) and handoff.get("action") == "preview")
    if preview or save:
        try:
            new_settings = settings_with(settings, form_values())
        except ProfileError as exc:
            st.error(f"Not valid: {md(exc)}")
            new_settings = None
        if new_settings is not None and save:
            try:
                version = save_profile(db, name, form_values(), author or None)
                st.success(f"Saved profile {md(name)} version {version}.")
                state.thr_loaded = f"{' '.join(name.split())} v{version}"
            except ProfileError as exc:
                st.error(f"Not saved: {md(exc)}")
            except PyMongoError as exc:
                st.error(f"Not saved: {error_text(exc)}")
        if new_settings is not None and preview:
            with st.spinner("Re-scoring stored answers…"):
                state.rescore_preview = (rescore(db, new_settings, session_filter=access, limit=int(limit) or None),
                                         new_settings)

    if "rescore_preview" in state:
        result, new_settings = state.rescore_preview
        st.subheader("Effect on stored sessions", anchor=False)
        if not result.rescored:
            st.info("No stored answers with grading features to re-score yet.")
        else:
            m = st.columns(4)
            m[0].metric("Answers re-scored", result.rescored, help=f"{result.skipped} without features left as stored")
            m[1].metric("Answers changing band", result.band_changes)
            m[2].metric("Sessions changing band", result.session_band_changes)
            m[3].metric("Time", f"{result.timings['total_s']:.2f} s")
            st.plotly_chart(effect_figure(result), width="stretch", key="effect_fig", config={"displaylogo": False})
            st.markdown("**Band transitions** (rows: stored band, columns: band under these thresholds)")
            st.dataframe(result.transition_rows(), hide_index=True, width="stretch")
            if any(result.speech.values()):
                st.caption("Speech metrics recomputed from stored words: "
                           + ", ".join(f"{k} {v}" for k, v in result.speech.items() if v))
        st.markdown("**Mohler 2011 short answers** (human grades 0-5)")
        if not MOHLER.exists():
            st.caption("The Mohler human-graded answers are not installed on this server, so r/RMSE is not shown.")
        else:
            build = st.button("Compute Mohler features once (runs the sentence model)", key="mohler_build")
            try:
                before = mohler_effect(settings, MOHLER, build=build)
                after = mohler_effect(new_settings, MOHLER, build=False) if before is not None else None
            except (OSError, ValueError) as exc:
                st.error(f"Mohler evaluation failed: {md(exc)}")
                before = after = None
            if before is None or after is None:
                st.caption("Features for the Mohler data are not cached yet; computing them once takes a minute "
                           "or two, then every preview only re-scores them.")
            else:
                st.dataframe([
                    {"thresholds": "current settings", "pearson r": round(before.pearson_r, 4),
                     "RMSE (0-5)": round(before.rmse, 4), "off-topic capped": before.off_topic, "answers": before.n},
                    {"thresholds": "this form", "pearson r": round(after.pearson_r, 4),
                     "RMSE (0-5)": round(after.rmse, 4), "off-topic capped": after.off_topic, "answers": after.n},
                ], hide_index=True, width="stretch")
                st.caption("In-sample: the shipped calibration was fitted on these answers; compare the rows, "
                           "not the absolute figures.")

    st.divider()
    st.subheader("Apply a profile to stored sessions", anchor=False)
    if not labels:
        st.caption("Save a profile first.")
    else:
        cols = st.columns([3, 2])
        target = cols[0].selectbox("Profile to apply", list(labels), key="apply_pick")
        confirm = cols[1].checkbox(f"Overwrite the stored grades of the {reachable} session"
                                   f"{'s' if reachable != 1 else ''} you may change", key="apply_confirm")
        if st.button("Apply profile to stored sessions", key="apply", disabled=not confirm, type="primary"):
            prof = load_profile(db, *labels[target])
            if prof is None:
                st.error("That profile no longer exists.")
            else:
                try:
                    with st.spinner("Re-scoring and writing…"):
                        done = rescore(db, settings_with(settings, prof["thresholds"]), session_filter=access,
                                       write=True, profile=(prof["name"], prof["version"]), writer=store.writer)
                    st.success(f"Applied {md(target)}: {done.rescored} answers in {done.sessions} sessions re-scored "
                               f"({done.band_changes} changed band) in {done.timings['total_s']:.1f} s."
                               + (" Some grades are still in the journal and reach the database once it answers."
                                  if done.pending else ""))
                except (PyMongoError, ProfileError) as exc:
                    st.error(f"Not applied: {error_text(exc)}")

with tab_cal:
    st.write("How each delivery metric is distributed across stored sessions, and its Pearson correlation "
             "with the grade. Missing values (no speech, no face) are left out, never counted as zero.")
    cols = st.columns([2, 1])
    level = cols[0].radio("Per", ["session", "answer"], horizontal=True, key="cal_level")
    if cols[1].button("Compute", key="cal_compute", width="stretch"):
        with st.spinner("Aggregating…"):
            state.calibration = calibration_view(db, level, session_filter=access)
    view = state.get("calibration")
    if view is not None:
        if not view.rows:
            st.info("No stored answers yet.")
        else:
            st.dataframe(view.table(), hide_index=True, width="stretch")
            st.plotly_chart(calibration_figure(view), width="stretch", key="cal_fig", config={"displaylogo": False})
