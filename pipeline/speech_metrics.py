"""Delivery metrics of a spoken answer from word timestamps (+ optional audio).

Pure functions: no model, no I/O. Words are dicts with ``word``, ``start`` and ``end``
(seconds since the answer started), as ``sidecar.asr`` produces them. Where there is
no speech the metrics say so with ``None`` instead of inventing a number. The pitch/energy
track is in ``pipeline.prosody``, the thresholds in ``pipeline.speech_options`` (both
re-exported here); the word error rate of a transcript in ``pipeline.evaluate``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.prosody import (
    ENERGY_FLOOR_DB,
    YIN_BLOCK_FRAMES,
    ProsodyAccumulator,
    ProsodyTrack,
    frame_energy_db,
    prosody_track,
    yin_pitch,
)
from pipeline.records import SAMPLE_RATE
from pipeline.speech_options import SpeechMetricsOptions, Word

__all__ = [
    "ENERGY_FLOOR_DB",
    "YIN_BLOCK_FRAMES",
    "ProsodyAccumulator",
    "ProsodyTrack",
    "SpeechMetrics",
    "SpeechMetricsOptions",
    "Word",
    "compute_speech_metrics",
    "filler_and_pause_metrics",
    "find_fillers",
    "find_pauses",
    "frame_energy_db",
    "normalize_tokens",
    "pace_band",
    "pace_track",
    "prosody_track",
    "speech_words",
    "words_per_minute",
    "yin_pitch",
]


# --------------------------------------------------------------------------- text


_KEEP = re.compile(r"[^\w\s']+", flags=re.UNICODE)


def normalize_tokens(text: str) -> list[str]:
    """Lower-case tokens without punctuation; hyphens split ("Mm-hmm" -> mm, hmm)."""
    text = _KEEP.sub(" ", text.lower().replace("-", " ").replace("\u2019", "'"))
    return [t.strip("'") for t in text.split() if t.strip("'")]


_REPEATS = re.compile(r"(.)\1+")


@lru_cache(maxsize=65536)
def _word_tokens(text: str) -> tuple[str, ...]:
    """``normalize_tokens`` of one transcript word, cached: answers repeat their words."""
    return tuple(normalize_tokens(text))


@lru_cache(maxsize=65536)
def _squeeze(token: str) -> str:
    """Collapse repeated letters so "ummm"/"umm" match "um" and "hmmm" matches "hmm"."""
    return _REPEATS.sub(r"\1", token)


# --------------------------------------------------------------------------- words


def _times(words: Sequence[Word]) -> tuple[np.ndarray, np.ndarray]:
    starts = np.array([float(w["start"]) for w in words], dtype=np.float64)
    ends = np.array([float(w["end"]) for w in words], dtype=np.float64)
    return starts, ends


def speech_words(words: Iterable[Word]) -> list[Word]:
    """Words that carry text, sorted by start time."""
    kept = [w for w in words if _word_tokens(str(w.get("word", "")))]
    return sorted(kept, key=lambda w: (float(w["start"]), float(w["end"])))


def words_per_minute(
    words: Sequence[Word], start: float | None = None, end: float | None = None, min_seconds: float = 3.0
) -> float | None:
    """Words per minute between ``start`` and ``end`` (default: first word to last word)."""
    return _words_per_minute(speech_words(words), start, end, min_seconds)


def _words_per_minute(
    words: Sequence[Word], start: float | None = None, end: float | None = None, min_seconds: float = 3.0
) -> float | None:
    if not words:
        return None
    t0 = float(words[0]["start"]) if start is None else start
    t1 = float(words[-1]["end"]) if end is None else end
    span = t1 - t0
    if span < min_seconds:  # two words in half a second are not a pace
        return None
    return len(words) / span * 60.0


def pace_band(wpm: float | None, low: float, high: float) -> str | None:
    if wpm is None:
        return None
    if wpm < low:
        return "slow"
    if wpm > high:
        return "fast"
    return "ok"


def pace_track(
    words: Sequence[Word], window: float = 10.0, step: float = 1.0
) -> list[dict[str, float]]:
    """Sliding-window pace: ``[{t, wpm}]`` with ``t`` the window's end.

    A word counts in a window when its midpoint falls inside it. Windows cover the
    speech from the first word's start; an answer shorter than one window gives one
    point over its actual length (or none below 3 s, like ``words_per_minute``).
    """
    return _pace_track(speech_words(words), window, step)


def _pace_track(words: Sequence[Word], window: float, step: float) -> list[dict[str, float]]:
    if not words:
        return []
    starts, ends = _times(words)
    mids = np.sort((starts + ends) / 2.0)
    t_first, t_last = float(starts[0]), float(ends.max())
    if t_last - t_first < window:
        wpm = _words_per_minute(words)
        return [] if wpm is None else [{"t": round(t_last, 3), "wpm": round(wpm, 1)}]
    t_ends = np.arange(t_first + window, t_last + 1e-9, step)
    if t_ends.size == 0 or t_ends[-1] < t_last - 1e-6:
        t_ends = np.append(t_ends, t_last)
    counts = np.searchsorted(mids, t_ends, side="right") - np.searchsorted(mids, t_ends - window, side="right")
    rates = counts / window * 60.0
    return [{"t": round(float(t), 3), "wpm": round(float(v), 1)} for t, v in zip(t_ends, rates, strict=True)]


def find_fillers(words: Sequence[Word], fillers: Iterable[str]) -> list[dict[str, Any]]:
    """Filler words and phrases with their time span, longest phrase first at each word.

    Case and punctuation do not matter ("Um," = "um"), stretched spellings match
    ("Ummm"), and a phrase ("you know") must be consecutive words.
    """
    return _find_fillers(speech_words(words), tuple(fillers))


@lru_cache(maxsize=64)
def _filler_phrases(fillers: tuple[str, ...]) -> dict[str, list[tuple[tuple[str, ...], str]]]:
    """First token -> [(phrase tokens, name)], longest phrase first."""
    by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    for f in fillers:
        tokens = normalize_tokens(f)
        if tokens:
            phrase = tuple(_squeeze(t) for t in tokens)
            entries = by_first.setdefault(phrase[0], [])
            if all(p != phrase for p, _ in entries):
                entries.append((phrase, " ".join(tokens)))
    for entries in by_first.values():
        entries.sort(key=lambda e: len(e[0]), reverse=True)
    return by_first


def _find_fillers(words: Sequence[Word], fillers: tuple[str, ...]) -> list[dict[str, Any]]:
    by_first = _filler_phrases(fillers)
    # Flatten to tokens that remember which word they came from ("you-know" -> 2 tokens).
    tokens: list[str] = []
    owner: list[int] = []
    for i, w in enumerate(words):
        for tok in _word_tokens(str(w["word"])):
            tokens.append(_squeeze(tok))
            owner.append(i)
    found: list[dict[str, Any]] = []
    k = 0
    while k < len(tokens):
        for phrase, name in by_first.get(tokens[k], ()):
            n = len(phrase)
            if tuple(tokens[k : k + n]) == phrase:
                first, last = owner[k], owner[k + n - 1]
                found.append({
                    "phrase": name,
                    "text": " ".join(str(words[i]["word"]).strip() for i in range(first, last + 1)),
                    "start": float(words[first]["start"]),
                    "end": float(words[last]["end"]),
                    "word_index": first,
                })
                k += n
                break
        else:
            k += 1
    return found


def find_pauses(words: Sequence[Word], min_seconds: float = 1.0) -> list[dict[str, float]]:
    """Silences between consecutive words longer than ``min_seconds``."""
    return _find_pauses(speech_words(words), min_seconds)


def _find_pauses(words: Sequence[Word], min_seconds: float) -> list[dict[str, float]]:
    if len(words) < 2:
        return []
    starts, ends = _times(words)
    # Running max of ends: an overlapping timestamp must not create a negative gap.
    prev_end = np.maximum.accumulate(ends)[:-1]
    gaps = starts[1:] - prev_end
    idx = np.nonzero(gaps > min_seconds)[0]
    return [
        {"start": round(float(prev_end[i]), 3), "end": round(float(starts[i + 1]), 3), "duration": round(float(gaps[i]), 3)}
        for i in idx
    ]


def filler_and_pause_metrics(
    words: Sequence[Word], options: SpeechMetricsOptions, fillers: bool = True, pauses: bool = True
) -> dict[str, Any]:
    """Only the filler and/or pause fields of ``compute_speech_metrics`` (re-scoring needs no more)."""
    return _filler_and_pause_metrics(speech_words(words), options, fillers, pauses)


def _filler_and_pause_metrics(
    kept: Sequence[Word], options: SpeechMetricsOptions, fillers: bool = True, pauses: bool = True
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not kept:  # as SpeechMetrics without speech: nothing found, no rate
        if fillers:
            out.update({"fillers": [], "filler_counts": {}, "filler_count": 0, "fillers_per_minute": None})
        if pauses:
            out.update({"pauses": [], "longest_pause_s": None})
        return out
    if fillers:
        speaking = float(kept[-1]["end"]) - float(kept[0]["start"])
        found = _find_fillers(kept, tuple(options.filler_words))
        out.update({
            "fillers": found,
            "filler_counts": dict(Counter(f["phrase"] for f in found)),
            "filler_count": len(found),
            "fillers_per_minute": (round(len(found) / (speaking / 60.0), 2)
                                   if speaking >= options.min_pace_seconds else None),
        })
    if pauses:
        found_pauses = _find_pauses(kept, options.pause_seconds)
        out.update({"pauses": found_pauses,
                    "longest_pause_s": max((p["duration"] for p in found_pauses), default=None)})
    return out


# --------------------------------------------------------------------------- all together


@dataclass
class SpeechMetrics:
    has_speech: bool
    word_count: int
    duration_s: float | None  # the answer's length (given, or first word to last word)
    speaking_s: float | None  # first word start to last word end
    wpm: float | None
    pace_band: str | None
    pace_track: list[dict[str, float]] = field(default_factory=list)
    fillers: list[dict[str, Any]] = field(default_factory=list)
    filler_counts: dict[str, int] = field(default_factory=dict)
    filler_count: int = 0
    fillers_per_minute: float | None = None
    pauses: list[dict[str, float]] = field(default_factory=list)
    longest_pause_s: float | None = None
    prosody: ProsodyTrack | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compute_speech_metrics(
    words: Sequence[Word],
    audio: np.ndarray | None = None,
    *,
    rate: int = SAMPLE_RATE,
    duration: float | None = None,
    options: SpeechMetricsOptions | None = None,
    prosody: ProsodyTrack | None = None,
) -> SpeechMetrics:
    """All delivery metrics of one answer.

    ``duration`` (seconds) is the answer's full length when known; pace is then
    measured from the first word to the last, not over the silence before it.
    ``prosody`` is the track when already computed as the audio arrived
    (``ProsodyAccumulator``); otherwise it is computed from ``audio``.
    """
    opts = options or SpeechMetricsOptions()
    if prosody is None and audio is not None and len(audio):
        prosody = prosody_track(audio, rate, opts)
    if duration is None and audio is not None and len(audio):
        duration = len(audio) / rate
    kept = speech_words(words)
    if not kept:
        return SpeechMetrics(has_speech=False, word_count=0, duration_s=duration, speaking_s=None, wpm=None,
                             pace_band=None, prosody=prosody)
    speaking = float(kept[-1]["end"]) - float(kept[0]["start"])
    wpm = _words_per_minute(kept, min_seconds=opts.min_pace_seconds)
    return SpeechMetrics(
        has_speech=True,
        word_count=len(kept),
        duration_s=duration if duration is not None else round(speaking, 3),
        speaking_s=round(speaking, 3),
        wpm=None if wpm is None else round(wpm, 1),
        pace_band=pace_band(wpm, opts.pace_low_wpm, opts.pace_high_wpm),
        pace_track=_pace_track(kept, opts.pace_window_seconds, opts.pace_step_seconds),
        **_filler_and_pause_metrics(kept, opts),
        prosody=prosody,
    )
