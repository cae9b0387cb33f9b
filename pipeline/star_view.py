"""The STAR view of a behavioural answer as the card, the timeline and the export show it: each part's
text and times on the answer axis, and the advice lines (the model itself is pipeline/star.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from pipeline.axis import AnswerClock, Doc, num
from pipeline.star import PART_NAMES, PARTS, is_behavioural, star_advice
from pipeline.text import quoted


class StarPartView(TypedDict):
    """One STAR part of a behavioural answer: found or not, its text and times on the answer axis."""

    part: str  # "Situation", "Task", "Action", "Result"
    present: bool
    text: str
    start_s: float | None
    end_s: float | None
    spans: list[tuple[float, float]]  # each run of its sentences, answer axis
    confidence: float | None  # present: mean probability of its sentences; absent: 1 - the highest one


class StarView(TypedDict):
    parts: list[StarPartView]
    in_order: bool
    result_measurable: bool | None  # None: no Result
    result_measure: str | None  # the measurable phrase quoted
    action_i: int | None
    action_we: int | None


def star_section(answer: Doc, clock: AnswerClock, has_words: bool) -> tuple[StarView | None, list[str], list[str]]:
    """The STAR view of a behavioural answer (times on the answer axis), its advice lines (prefixed 'STAR:')
    and what is missing; nothing at all for other questions."""
    if not has_words or not is_behavioural(str(answer.get("question") or "")):
        return None, [], []
    stored = answer.get("star")
    if not isinstance(stored, Mapping) or "parts" not in stored:
        why = stored.get("missing") if isinstance(stored, Mapping) else None
        return None, [], [str(why or "No STAR analysis stored for this answer (analysed before STAR detection).")]

    def x(v: Any) -> float | None:
        t = num(v)
        return None if t is None else round(clock.audio_x(t), 2)

    parts: list[StarPartView] = []
    for key in PARTS:
        p: Mapping[str, Any] = (stored["parts"] or {}).get(key) or {}
        spans = [(x(sp.get("start")), x(sp.get("end"))) for sp in p.get("spans") or []]
        parts.append({"part": PART_NAMES[key], "present": bool(p.get("present")), "text": str(p.get("text") or ""),
                      "start_s": x(p.get("start")), "end_s": x(p.get("end")),
                      "spans": [(a, b) for a, b in spans if a is not None and b is not None],
                      "confidence": num(p.get("confidence"))})
    view: StarView = {
        "parts": parts, "in_order": bool(stored.get("in_order", True)),
        "result_measurable": stored.get("result_measurable"), "result_measure": stored.get("result_measure"),
        "action_i": stored.get("action_i"), "action_we": stored.get("action_we"),
    }
    found = [p for p in parts if p["present"] and p["start_s"] is not None]
    lines = []
    if found:
        lines.append("STAR: " + "; ".join(f"{p['part']} at {p['start_s']:.1f} s" for p in found)
                     + (f"; the Result is measurable ({quoted(str(view['result_measure']), 30)})"
                        if view["result_measurable"] else "") + ".")
    lines += [f"STAR: {line}" for line in star_advice(stored)]
    return view, lines, []
