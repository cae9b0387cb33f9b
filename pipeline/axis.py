"""The answer's time axis (seconds since the answer began) and the speech events placed on it:
the clock, fillers and pauses with the current settings, key-point evidence rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from pipeline.speech_metrics import find_fillers, find_pauses

if TYPE_CHECKING:
    from pipeline.report import ReportOptions

Doc = Mapping[str, Any]  # a stored MongoDB document, read only


class EvidenceRow(TypedDict):
    """One key point of the grade: covered or not, its (closest) span and times on the answer axis."""

    key_point: str
    covered: bool
    span: str
    start_s: float | None
    end_s: float | None
    similarity: float | None
    unsaid: list[str] | None  # key-point words the closest span does not say (missed, newer records)


def num(value: Any) -> float | None:
    """``value`` as a finite float, else None (a missing value, never 0)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


@dataclass(frozen=True)
class AnswerClock:
    origin_ms: float | None  # epoch ms of x = 0
    audio_offset_s: float  # audio-relative seconds + this = seconds since the answer began
    end_s: float | None  # the answer's length on that axis, when known

    def word_x(self, word: Doc) -> float:
        t_ms = word.get("t_ms")
        if t_ms is not None and self.origin_ms is not None:
            return (float(t_ms) - self.origin_ms) / 1000.0
        return self.audio_offset_s + float(word.get("start") or 0.0)

    def audio_x(self, seconds: float) -> float:
        return self.audio_offset_s + float(seconds)


def answer_clock(answer: Doc, first_frame_ms: float | None = None) -> AnswerClock:
    started = num(answer.get("started_ms"))
    audio = num(answer.get("audio_started_ms"))
    origin = started if started is not None else audio if audio is not None else first_frame_ms
    offset = (audio - origin) / 1000.0 if audio is not None and origin is not None else 0.0
    ended = num(answer.get("ended_ms"))
    end_s = (ended - origin) / 1000.0 if ended is not None and origin is not None and ended >= origin else None
    return AnswerClock(origin, offset, end_s)


def answer_fillers(answer: Doc, options: ReportOptions) -> list[dict[str, Any]]:
    """Fillers with the current filler list when words are stored; else the stored ones."""
    words = answer.get("words") or []
    if words:
        return find_fillers(words, options.filler_words)
    return list((answer.get("metrics") or {}).get("fillers") or [])


def answer_pauses(answer: Doc, options: ReportOptions) -> list[dict[str, float]]:
    """Pauses with the current threshold when words are stored; else the stored ones."""
    words = answer.get("words") or []
    if words:
        return find_pauses(words, options.pause_seconds)
    stored = (answer.get("metrics") or {}).get("pauses") or []
    return [p for p in stored if float(p.get("duration", 0)) >= options.pause_seconds]


def key_point_rows(answer: Doc, clock: AnswerClock) -> list[EvidenceRow]:
    """One row per key point: covered or not, with its span and times (answer axis)."""
    grade = answer.get("grade") or {}
    closest = {
        str(k.get("key_point")): k for k in ((answer.get("features") or {}).get("key_points") or []) if isinstance(k, Mapping)
    }

    def times(item: Mapping[str, Any]) -> tuple[float | None, float | None]:
        s, e = num(item.get("start")), num(item.get("end"))
        return (None if s is None else round(clock.audio_x(s), 2), None if e is None else round(clock.audio_x(e), 2))

    rows: list[EvidenceRow] = []
    for m in grade.get("matched") or []:
        s, e = times(m)
        rows.append({"key_point": str(m.get("key_point", "")), "covered": True, "span": m.get("span") or "",
                     "start_s": s, "end_s": e, "similarity": num(m.get("similarity")), "unsaid": None})
    for m in grade.get("missed") or []:
        kp = str(m.get("key_point", ""))
        near = closest.get(kp, {})
        s, e = times(near)
        unsaid = near.get("unsaid")
        rows.append({"key_point": kp, "covered": False, "span": near.get("span") or "",
                     "start_s": s, "end_s": e, "similarity": num(m.get("best_similarity")),
                     "unsaid": [str(w) for w in unsaid] if isinstance(unsaid, list) else None})
    return rows

