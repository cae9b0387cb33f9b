"""The sidebar threshold panel (researchers and admins): one widget per threshold spec, a live
what-if that writes nothing, a reset, and the hand-off to the Research page (save / preview)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from pipeline.profiles import ProfileError, parse_words, settings_with, threshold_specs
from pipeline.safe_text import md
from pipeline.settings import Settings
from pipeline.whatif import changed_values

PANEL_ROLES = ("researcher", "admin")
PREFIX = "wi_thr_"  # session-state keys of the panel's threshold widgets
HANDOFF = "research_handoff"  # {"values": {...}, "action": "save" | "preview"}, read by the Research page
RESEARCH_PAGE = "pages/research.py"


def may_tune(user: Mapping[str, Any] | None) -> bool:
    return bool(user) and (user or {}).get("role") in PANEL_ROLES


def _reset() -> None:
    for key in [k for k in st.session_state if str(k).startswith(PREFIX)]:
        del st.session_state[key]


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(_fmt(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _widgets(base: Settings) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for spec in threshold_specs(base):
        key = PREFIX + spec.name
        label = f"{spec.name} (profile: {_fmt(spec.value)})"
        if spec.kind == "words":
            text = st.text_input(label, value=", ".join(spec.value), key=key, help=spec.help, max_chars=2000)
            values[spec.name] = parse_words(text)
        elif spec.kind == "cutoffs":
            st.caption(f"{spec.name} (profile: {_fmt(spec.value)}): weak | fair | good | strong", help=spec.help)
            cols = st.columns(len(spec.value))
            values[spec.name] = tuple(
                float(cols[i].number_input(f"cut-off {i + 1}", 0.0, 1.0, float(v), 0.05, format="%.2f",
                                           key=f"{key}_{i}", help=spec.help))
                for i, v in enumerate(spec.value))
        elif spec.kind == "int":
            lo = None if spec.min_value is None else int(spec.min_value)
            hi = None if spec.max_value is None else int(spec.max_value)
            values[spec.name] = int(st.number_input(label, lo, hi, int(spec.value), 1, key=key, help=spec.help))
        elif spec.min_value is not None and spec.max_value is not None:
            values[spec.name] = float(st.slider(label, float(spec.min_value), float(spec.max_value),
                                                float(spec.value), 0.01, key=key, help=spec.help))
        else:
            step = 0.1 if float(spec.value) < 20 else 5.0
            lo_f = None if spec.min_value is None else float(spec.min_value)
            hi_f = None if spec.max_value is None else float(spec.max_value)
            values[spec.name] = float(st.number_input(label, lo_f, hi_f, float(spec.value), step,
                                                      key=key, help=spec.help))
    return values


def threshold_panel(user: Mapping[str, Any] | None, base: Settings) -> Settings | None:
    """Draw the panel in the sidebar for researchers and admins (nobody else sees anything) and
    return the what-if settings when a value differs from ``base``; None when none does (or the
    values are refused, which the panel says). Nothing is stored."""
    if not may_tune(user):
        return None
    with st.sidebar:
        st.subheader("Thresholds (what-if)", anchor=False)
        st.caption("Change a threshold to see this page re-scored at once. Nothing is saved.")
        with st.expander("Thresholds", expanded=True, icon=":material/tune:"):
            values = _widgets(base)
        changed = changed_values(base, values)
        try:
            settings = settings_with(base, changed) if changed else None
        except ProfileError as exc:
            st.error(f"Not applied: {md(exc)}")
            settings = None
        if settings is not None:
            st.badge("what-if: not saved", icon=":material/science:", color="orange")
            st.caption(f"{len(changed)} threshold{'s' if len(changed) != 1 else ''} changed: "
                       + md(", ".join(changed)))
        st.button("Reset to profile", key="wi_reset_button", on_click=_reset, disabled=not changed,
                  icon=":material/restart_alt:")
        cols = st.columns(2)
        save = cols[0].button("Save as profile", key="wi_save_button", disabled=settings is None)
        preview = cols[1].button("Preview on stored sessions", key="wi_preview_button", disabled=settings is None)
        if (save or preview) and settings is not None:
            st.session_state[HANDOFF] = {"values": changed, "action": "save" if save else "preview"}
            st.switch_page(RESEARCH_PAGE)
    return settings
