"""The one card view-model of an answer (``AnswerCard``): grade with its evidence, delivery metrics,
advice tied to that evidence, and the display values already decided; plus the session header.
The Streamlit renderer (ui/cards.py) and the HTML export (pipeline/export.py) only lay it out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from pipeline.axis import (
    Doc,
    EvidenceRow,
    answer_clock,
    answer_fillers,
    answer_pauses,
    key_point_rows,
    num,
)
from pipeline.face_advice import add_face_advice, eye_contact_tile, head_pose_text
from pipeline.frames import (
    FrameArrays,
    FrameSummary,
    FramingSummary,
    HeadPoseSummary,
    frame_arrays,
    frame_summary,
)
from pipeline.report import ReportOptions
from pipeline.speech_metrics import pace_band
from pipeline.star_view import StarView, star_section
from pipeline.text import quoted

# Pause longer than this gets the "say you need a moment" advice.
LONG_PAUSE_ADVICE_SECONDS = 3.0
FACE_RATIO_ADVICE = 0.8


class GradeView(TypedDict):
    score: float
    percent: int
    band: str | None
    flags: list[str]
    raw_cosine: float | None
    coverage: float | None
    key_point_source: str | None


class FillerView(TypedDict):
    phrase: str
    t_s: float


class CardMetrics(TypedDict):
    """Delivery numbers; None where the signal is missing (never a made-up 0)."""

    wpm: float | None
    pace_band: str | None
    pace_range_wpm: tuple[float, float]
    word_count: int | None
    filler_count: int | None
    fillers: list[FillerView]
    pause_count: int | None
    longest_pause_s: float | None
    face_ratio: float | None
    eye_contact_ratio: float | None
    eye_contact_method: str | None  # "iris" or "frontal-proxy"; None when the frames do not say
    head_pose: HeadPoseSummary | None  # median / p90 |yaw|, |pitch|, |roll| in degrees
    blink_rate_per_min: float | None
    smile_ratio: float | None
    framing: FramingSummary | None
    dominant_emotion: str | None
    dominant_probability: float | None
    emotion_confidence: float | None


@dataclass(frozen=True)
class Tile:
    """One headline number as shown: label, formatted value, optional tooltip (raw text; renderers escape)."""

    label: str
    value: str
    help: str | None = None


@dataclass(frozen=True)
class AnswerCard:
    """Everything a view shows of one answer, decided once. Text is raw: every renderer escapes it
    (``safe_text.md`` for Streamlit, ``safe_text.plain_html`` for HTML). The expression tile and line
    exist only when emotion is enabled (``ReportOptions.emotion_enabled``)."""

    answer_id: str
    index: int | None
    question: str
    status: str | None
    grade: GradeView | None
    evidence: list[EvidenceRow]
    metrics: CardMetrics
    advice: list[str]
    missing: list[str]
    notes: list[str]
    tiles: tuple[Tile, ...]
    transcript: str  # "" when none was stored
    star: StarView | None = None  # behavioural questions with a transcript only

    def expression_line(self, escape: Callable[[str], str]) -> str | None:
        """The expression sentence (None when there is none to show), with ``escape`` applied to
        the values it quotes: ``md`` for Streamlit, ``plain_html`` for HTML."""
        dominant = self.metrics["dominant_emotion"]
        if not dominant:  # also None whenever emotion is switched off
            return None
        conf = self.metrics["emotion_confidence"]
        return (f"Most frequent expression: {escape(dominant)}"
                + (f" (model confidence {conf:.0%})" if conf is not None else "")
                + "; expression estimates are approximate.")

    @property
    def title(self) -> str:
        return f"Q{(self.index or 0) + 1}. {self.question}"

    def evidence_table(self) -> list[dict[str, str]]:
        """The grade evidence as display rows (column -> text)."""
        return [{
            "key point": r["key_point"],
            "covered": "✓ covered" if r["covered"] else "✗ missed",
            "span (closest for missed)": r["span"],
            "at (s)": "" if r["start_s"] is None else f"{r['start_s']:.1f}–{r['end_s'] or r['start_s']:.1f}",
            "similarity": "" if r["similarity"] is None else f"{r['similarity']:.2f}",
        } for r in self.evidence]

    def star_table(self) -> list[dict[str, str]]:
        """The STAR parts as display rows (column -> text); empty when there is no STAR analysis."""
        if self.star is None:
            return []
        return [{
            "part": p["part"],
            "found": "✓ found" if p["present"] else "✗ missing",
            "at (s)": "" if p["start_s"] is None else f"{p['start_s']:.1f}–{p['end_s'] or p['start_s']:.1f}",
            "confidence": "" if p["confidence"] is None else f"{p['confidence']:.2f}",
            "what you said": p["text"] if len(p["text"]) <= 240 else p["text"][:239] + "…",
        } for p in self.star["parts"]]


def answer_card_view(answer: Doc, frames: Sequence[Doc], options: ReportOptions) -> AnswerCard:
    """The card of one stored answer and its stored frames, with the options every view uses."""
    fa = frame_arrays(frames)
    return answer_card(answer, frame_summary(fa), options, frames=fa)


def _pct(v: float) -> str:
    return f"{round(v * 100)}%"


def _clock(seconds: float) -> str:
    """m:ss on the answer's axis."""
    s = max(0, round(seconds))
    return f"{s // 60}:{s % 60:02d}"


UNRELATED_SIMILARITY = 0.3  # below this the closest span is not about the key point at all


def _missed_line(r: EvidenceRow) -> str:
    """Why a key point did not count: what came closest, when, and what it leaves unsaid."""
    kp = quoted(r["key_point"], 40)
    sim = r["similarity"]
    if not r["span"] or sim is None:
        return f"Missed {kp}: nothing in the answer to compare with it."
    at = f" ({_clock(r['start_s'])})" if r["start_s"] is not None else ""
    closest = f"closest: {quoted(r['span'])}{at}"
    if sim < UNRELATED_SIMILARITY:
        return f"Missed {kp}: nothing in the answer is about it ({closest}, similarity {sim:.2f})."
    unsaid = r["unsaid"]
    if unsaid:
        words = ", ".join(quoted(w, 24) for w in unsaid[:4])
        return f"Missed {kp}: {closest}, about the same topic but does not say {words} (similarity {sim:.2f})."
    return (f"Missed {kp}: {closest}, about the same topic but not what the point says "
            f"(similarity {sim:.2f}): say it explicitly.")


def answer_card(answer: Doc, frame_summary: FrameSummary | None = None,
                options: ReportOptions | None = None, *,
                frames: Sequence[Doc] | FrameArrays | None = None) -> AnswerCard:
    """Grade with its evidence, delivery metrics, and advice tied to that evidence.

    With ``frames`` (the answer's frame documents or their columns) the card also names, with their
    times, the stretches where the candidate looked away while speaking.
    ``missing`` says which signals are absent and why; no number is made up for them.
    """
    opts = options or ReportOptions()
    clock = answer_clock(answer)
    grade = answer.get("grade") or {}
    metrics = answer.get("metrics") or {}
    status = answer.get("status")
    flags = list(grade.get("flags") or [])
    advice: list[str] = []
    missing: list[str] = []
    notes: list[str] = []
    words = [w for w in (answer.get("words") or []) if str(w.get("word", "")).strip()]
    has_speech = bool(metrics.get("has_speech", bool(words))) and "no_speech" not in flags
    analysed = status not in ("recording", "transcribing")

    # --- grade and its evidence
    score = num(grade.get("score"))
    if not analysed:
        missing.append(f"Still being analysed (status: {status}): no grade or speech feedback yet.")
    elif status == "failed":
        err = answer.get("error")
        missing.append(f"Analysis failed{': ' + str(err)[:200] if err else ''}: no grade.")
    elif not has_speech:
        missing.append("No speech detected: no grade, pace, filler or pause feedback.")
    elif score is None:
        missing.append("No grade stored for this answer.")
    if status == "incomplete":
        notes.append("The answer was cut short (status: incomplete): feedback covers only what was recorded.")
    grade_out: GradeView | None = None
    if score is not None:
        grade_out = {
            "score": score, "percent": round(score * 100), "band": grade.get("band"), "flags": flags,
            "raw_cosine": num(grade.get("raw_cosine")), "coverage": num(grade.get("coverage")),
            "key_point_source": grade.get("key_point_source"),
        }
    evidence = key_point_rows(answer, clock)
    if evidence and analysed and has_speech:
        covered = [r for r in evidence if r["covered"]]
        missed = [r for r in evidence if not r["covered"]]
        what = "key points" if grade.get("key_point_source") == "author" else "points of the reference answer"
        line = f"You covered {len(covered)} of {len(evidence)} {what}"
        if missed:
            line += "; missed: " + ", ".join(quoted(r["key_point"]) for r in missed[:5])
            line += f" and {len(missed) - 5} more" if len(missed) > 5 else ""
        advice.append(line + ".")
        for r in covered[:5]:
            if r["span"]:
                advice.append(f"Covered {quoted(r['key_point'], 40)}: you said {quoted(r['span'])}"
                              + (f" ({_clock(r['start_s'])})." if r["start_s"] is not None else "."))
        for r in missed[:5]:
            advice.append(_missed_line(r))
    star, star_lines, star_missing = star_section(answer, clock, analysed and has_speech)
    advice += star_lines
    missing += star_missing
    if "too_short" in flags:
        n = metrics.get("word_count", len(words))
        advice.append(f"The answer is short ({n} words; aim for at least {opts.min_answer_words}): "
                      "develop it with a concrete example.")
    if "off_topic" in flags:
        raw = num(grade.get("raw_cosine"))
        advice.append("The answer looks off-topic" + (f" (similarity to the reference {raw:.2f})" if raw is not None
                                                     else "") + ": answer the question that was asked.")
    if "truncated" in flags:
        notes.append("The transcript was too long and was cut before grading: only its first part was graded.")

    # --- pace
    wpm = num(metrics.get("wpm")) if has_speech and analysed else None
    band = pace_band(wpm, opts.pace_low_wpm, opts.pace_high_wpm)
    band_text = f"band {opts.pace_low_wpm:.0f}–{opts.pace_high_wpm:.0f}"
    if wpm is not None:
        peak = max(((num(p.get("wpm")) or 0.0, num(p.get("t")) or 0.0) for p in metrics.get("pace_track") or []),
                   default=None)
        if band == "fast":
            advice.append(f"Pace {wpm:.0f} wpm is fast ({band_text}): slow down and pause between points.")
        elif band == "slow":
            advice.append(f"Pace {wpm:.0f} wpm is slow ({band_text}): tighten your sentences and keep moving.")
        else:
            line = f"Pace {wpm:.0f} wpm is comfortable ({band_text})"
            if peak and peak[0] > opts.pace_high_wpm:
                line += f", but it peaked at {peak[0]:.0f} wpm around {clock.audio_x(peak[1]):.0f} s"
            advice.append(line + ".")
    elif has_speech and analysed:
        missing.append("Too little speech to measure pace.")

    # --- fillers and pauses (recomputed from the stored words with the current settings)
    fillers = answer_fillers(answer, opts) if has_speech and analysed else []
    pauses = answer_pauses(answer, opts) if has_speech and analysed else []
    filler_list: list[FillerView] = [{"phrase": str(f.get("phrase") or f.get("text") or f.get("word") or ""),
                    "t_s": round(clock.audio_x(float(f.get("start") or 0.0)), 1)} for f in fillers]
    if has_speech and analysed:
        if filler_list:
            shown = ", ".join(f"'{f['phrase']}' at {f['t_s']:.1f} s" for f in filler_list[:5])
            more = f", and {len(filler_list) - 5} more" if len(filler_list) > 5 else ""
            speaking = num(metrics.get("speaking_s"))
            rate = f", {len(filler_list) / (speaking / 60):.1f} per minute" if speaking and speaking >= 3 else ""
            advice.append(f"{len(filler_list)} filler{'s' if len(filler_list) != 1 else ''} ({shown}{more}{rate}): "
                          "pause silently instead of filling.")
        else:
            advice.append("No filler words.")
        if pauses:
            longest = max(pauses, key=lambda p: float(p["duration"]))
            line = (f"{len(pauses)} pause{'s' if len(pauses) != 1 else ''} over {opts.pause_seconds:g} s "
                    f"(longest {float(longest['duration']):.1f} s at {clock.audio_x(longest['start']):.1f} s)")
            if float(longest["duration"]) >= LONG_PAUSE_ADVICE_SECONDS:
                line += ": a long silence reads as lost; if you need time, say so."
            else:
                line += ": short pauses are fine, they help the listener."
            advice.append(line)
        else:
            advice.append(f"No pauses over {opts.pause_seconds:g} s.")

    # --- face, eye contact, emotion
    fs: Mapping[str, Any] = frame_summary or {}
    face_ratio = num(fs.get("face_ratio"))
    eye_ratio = num(fs.get("eye_contact_ratio"))
    dominant = fs.get("dominant") if opts.emotion_enabled else None
    if not fs or not fs.get("frames"):
        missing.append("No video frames stored for this answer: no emotion or eye-contact feedback.")
    elif not fs.get("face_frames"):
        missing.append("No face found in this answer: no emotion or eye-contact feedback.")
    else:
        if face_ratio is not None and face_ratio < FACE_RATIO_ADVICE:
            advice.append(f"Your face was found in only {_pct(face_ratio)} of frames: sit centred and well lit "
                          "so the feedback covers the whole answer.")
        add_face_advice(answer, fs, frames, opts, evidence, advice, missing, notes)
        if opts.emotion_enabled and dominant is None:
            missing.append("No emotion estimate for the face frames.")
    if not opts.emotion_enabled:
        notes.append("Emotion feedback is switched off.")
    dom_p = num(fs.get("dominant_probability")) if dominant else None
    conf = num(fs.get("mean_confidence")) if dominant else None
    if dominant and conf is not None and conf < opts.emotion_confidence_floor:
        notes.append(f"Emotion estimates are low-confidence (mean {conf:.2f}): treat them as uncertain.")

    grade_label = f"Grade · {grade_out['band']}" if grade_out and grade_out["band"] else "Grade"
    tiles = [
        Tile(grade_label, f"{grade_out['percent']}%" if grade_out else "no grade"),
        Tile(f"Pace, wpm · {band}" if band else "Pace, wpm", f"{wpm:.0f}" if wpm is not None else "—"),
        Tile("Fillers", str(len(filler_list)) if has_speech and analysed else "—"),
        Tile(*eye_contact_tile(eye_ratio, fs.get("eye_contact_method"))),
    ]
    pose: HeadPoseSummary | None = fs.get("head_pose")
    if pose is not None:  # old documents without head pose: no tile rather than a made-up angle
        # the tile is narrow: "yaw 6° · pitch 30°" was cut to "yaw 6…"; the help says which angle is which
        tiles.append(Tile("Head pose", f"{pose['yaw_median']:.0f}°/{pose['pitch_median']:.0f}°",
                          f"yaw/pitch: {head_pose_text(pose)} over {pose['frames']} frames; 90% of frames within yaw "
                          f"{pose['yaw_p90']:.0f}°, pitch {pose['pitch_p90']:.0f}°, roll {pose['roll_p90']:.0f}°"))
    if opts.emotion_enabled:  # switched off: no expression tile, no line, nothing to read
        help_text = None
        if dominant and dom_p is not None:
            help_text = f"mean probability {dom_p:.2f}" + (f", model confidence {conf:.2f}" if conf else "")
        tiles.append(Tile("Expression", str(dominant) if dominant else "—", help_text))
    transcript = answer.get("transcript")
    index = answer.get("index")
    return AnswerCard(
        answer_id=str(answer.get("_id", "")),
        index=int(index) if isinstance(index, int | float) else None,
        question=str(answer.get("question", "") or ""),
        status=None if status is None else str(status),
        grade=grade_out,
        evidence=evidence,
        metrics={
            "wpm": wpm,
            "pace_band": band,
            "pace_range_wpm": (opts.pace_low_wpm, opts.pace_high_wpm),
            "word_count": len(words) if has_speech else None,
            "filler_count": len(filler_list) if has_speech and analysed else None,
            "fillers": filler_list,
            "pause_count": len(pauses) if has_speech and analysed else None,
            "longest_pause_s": max((float(p["duration"]) for p in pauses), default=None),
            "face_ratio": face_ratio,
            "eye_contact_ratio": eye_ratio,
            "eye_contact_method": fs.get("eye_contact_method"),
            "head_pose": pose,
            "blink_rate_per_min": num(fs.get("blink_rate_per_min")),
            "smile_ratio": num(fs.get("smile_ratio")),
            "framing": fs.get("framing"),
            "dominant_emotion": dominant,
            "dominant_probability": dom_p,
            "emotion_confidence": conf,
        },
        advice=advice,
        missing=missing,
        notes=notes,
        tiles=tuple(tiles),
        transcript=str(transcript) if transcript else "",
        star=star,
    )


# --------------------------------------------------------------------------- session header


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M") + (" UTC" if value.tzinfo is None or value.utcoffset() == 0 else "")
    return str(value or "")


def session_label(row: Doc) -> str:
    """One line per session for a picker: candidate · role · date · grade."""
    grade = num(row.get("grade"))
    parts = [str(row.get("candidate") or "?"), str(row.get("role") or ""), _when(row.get("started_at")),
             f"{_pct(grade)} {row.get('band') or ''}".strip() if grade is not None else "no grade"]
    return " · ".join(p for p in parts if p)


def session_header(session: Doc, answers: Sequence[Doc] = ()) -> dict[str, Any]:
    grade = num(session.get("grade"))
    graded = [a for a in answers if num((a.get("grade") or {}).get("score")) is not None]
    return {
        "candidate": session.get("candidate") or "?",
        "role": session.get("role") or "",
        "date": _when(session.get("started_at")),
        "status": session.get("status") or "",
        "grade": grade,
        "grade_text": f"{_pct(grade)}" if grade is not None else "no grade",
        "band": session.get("band"),
        "flags": list(session.get("flags") or []),
        "answers": len(answers),
        "graded_answers": len(graded),
    }

