"""Renders one answer's card (grade, evidence, delivery, advice) from pipeline.report.answer_card."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from pipeline.report import ReportOptions
from pipeline.safe_text import md
from pipeline.settings import get_settings


def card_options(session_settings: Mapping[str, Any] | None = None) -> ReportOptions:
    """The options every card view uses (feedback after an answer, the report, its export):
    the current settings, with emotion off where the session was recorded with it off."""
    return ReportOptions.from_settings(get_settings(), session_settings)


def show_card(card: dict[str, Any]) -> None:
    grade = card.get("grade")
    m = card["metrics"]
    cols = st.columns(4)
    cols[0].metric("Grade", f"{grade['percent']}% · {md(grade['band'])}" if grade else "not graded")
    cols[1].metric("Pace", f"{m['wpm']:.0f} wpm ({m['pace_band']})" if m.get("wpm") is not None else "—")
    cols[2].metric("Fillers", m["filler_count"] if m.get("filler_count") is not None else "—")
    cols[3].metric("Eye contact", f"{m['eye_contact_ratio']:.0%}" if m.get("eye_contact_ratio") is not None else "—")
    for line in card.get("missing", []):
        st.warning(md(line), icon=":material/visibility_off:")  # lines quote errors, key points, spans
    if card.get("advice"):
        st.markdown("\n".join(f"- {md(a)}" for a in card["advice"]))
    if card.get("evidence"):
        rows = [{"key point": r["key_point"], "covered": "yes" if r["covered"] else "no",
                 "what you said": r.get("span") or "", "at (s)": r.get("start_s"),
                 "similarity": None if r.get("similarity") is None else round(r["similarity"], 2)}
                for r in card["evidence"]]
        st.dataframe(rows, hide_index=True, width="stretch")
    if m.get("dominant_emotion"):
        st.caption(f"Most frequent expression: {md(m['dominant_emotion'])} (model confidence "
                   f"{m['emotion_confidence']:.0%}); expression estimates are approximate.")
    for note in card.get("notes", []):
        st.caption(md(note))


def show_feedback(result: dict[str, Any], frames: list[dict[str, Any]] | None = None,
                  session_settings: Mapping[str, Any] | None = None) -> None:
    """Feedback right after an answer, from the sidecar's result and the answer's frame samples,
    built with the same options as the report (so MOCKAI_EMOTION_ENABLED=false hides it here too)."""
    from pipeline.report import answer_card, frame_summary

    st.subheader(f"Feedback: {md(result.get('question', ''))}")
    if result.get("error"):
        st.warning(md(result["error"]))
    answer = {**result, "_id": result.get("answer_id", "")}
    card = answer_card(answer, frame_summary(frames) if frames else None, card_options(session_settings))
    show_card(card)
    with st.expander("Transcript"):
        st.markdown(md(result.get("transcript")) if result.get("transcript") else "_No speech detected._")
