"""The one Streamlit renderer of an answer's card (``pipeline.card.AnswerCard``), used by the
feedback after an answer and by the report; ``card_options`` gives every view the same options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from pipeline.card import AnswerCard, answer_card_view
from pipeline.report import ReportOptions
from pipeline.safe_text import md
from pipeline.settings import get_settings


def card_options(session_settings: Mapping[str, Any] | None = None) -> ReportOptions:
    """The options every card view uses (feedback after an answer, the report, its export):
    the current settings, with emotion off where the session was recorded with it off."""
    return ReportOptions.from_settings(get_settings(), session_settings)


def show_card(card: AnswerCard) -> None:
    """Lay out a card; every piece of stored text goes through ``md`` (the one escaper)."""
    cols = st.columns(len(card.tiles))
    for col, tile in zip(cols, card.tiles, strict=True):
        col.metric(md(tile.label), md(tile.value), help=md(tile.help) if tile.help else None)
    for line in card.missing:
        st.info(md(line), icon=":material/visibility_off:")  # lines quote errors, key points, spans
    for line in card.notes:
        st.caption(md(line))
    if (expression := card.expression_line(md)) is not None:
        st.caption(expression)
    if card.advice:
        st.markdown("**Advice**\n\n" + "\n".join(f"- {md(a)}" for a in card.advice))
    table = card.evidence_table()
    if table:
        st.markdown("**Grade evidence**")
        st.dataframe(table, hide_index=True, width="stretch")  # cells are text, not Markdown
    star = card.star_table()
    if star:
        st.markdown("**STAR structure** (behavioural question)")
        st.dataframe(star, hide_index=True, width="stretch")
    with st.expander("Transcript"):
        st.markdown(md(card.transcript) if card.transcript else "_No transcript stored._")


def show_feedback(answer: Mapping[str, Any], frames: Sequence[Mapping[str, Any]] | None = None,
                  session_settings: Mapping[str, Any] | None = None) -> None:
    """Feedback right after an answer: the same card, built with the same options as the report
    (so MOCKAI_EMOTION_ENABLED=false hides the expression here too)."""
    doc = {**answer, "_id": answer.get("_id", answer.get("answer_id", ""))}
    card = answer_card_view(doc, frames or [], card_options(session_settings))
    st.subheader(f"Feedback: {md(card.question)}")
    if answer.get("error"):
        st.warning(md(answer["error"]))
    show_card(card)
