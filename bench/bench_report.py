"""Benchmark of pipeline.report: the timeline figure of a 60-minute answer.

    python bench/bench_report.py [--runs 5] [--minutes 60]

Synthetic stored documents shaped like the sidecar's: 7.5 frames/s (27,000 frames for
60 min) with face-lost stretches, 150 words/min (9,000 words) with t_ms, fillers, pauses,
a 1 s pace track and a 0.05 s prosody track (72,000 points), and a grade with matched and
missed key points. Times frame_arrays + answer_timeline (the figure), the JSON encoding
Streamlit sends to the browser, frame_summary and answer_card; prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repo importable
    sys.path.insert(0, str(ROOT))

from pipeline.card import answer_card  # noqa: E402
from pipeline.frames import frame_summary  # noqa: E402
from pipeline.report import ReportOptions  # noqa: E402
from pipeline.schemas import EMOTIONS  # noqa: E402
from pipeline.timeline import answer_timeline  # noqa: E402

T0_MS = 1_795_610_623_703
VOCAB = ["the", "system", "uses", "a", "cache", "so", "we", "reduce", "latency", "and", "then", "I", "measured",
         "it", "with", "load", "tests", "which", "showed", "results"]


def synthetic_answer(minutes: float = 60.0, fps: float = 7.5, wpm: float = 150.0, seed: int = 0,
                     session_id: str = "s-bench", answer_id: str = "a-bench") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(answer doc, frame docs) for one long answer, as the sidecar stores them."""
    rng = np.random.default_rng(seed)
    duration = minutes * 60.0
    audio_offset_ms = 400  # audio began 0.4 s after the answer
    audio_ms = T0_MS + audio_offset_ms
    # Frames: face lost in a few stretches (runs of ~2-10 s) and single-frame dropouts.
    n_frames = int(round(duration * fps))
    t = T0_MS + np.round(np.arange(n_frames) * 1000.0 / fps).astype(np.int64)
    face = np.ones(n_frames, bool)
    for start in rng.integers(0, n_frames, size=max(1, n_frames // 900)):
        face[start : start + int(rng.integers(15, 75))] = False
    face[rng.random(n_frames) < 0.01] = False
    probs = rng.dirichlet(np.array([1, 0.3, 0.5, 3, 1, 0.6, 8.0]), size=n_frames)
    frames: list[dict[str, Any]] = []
    for i in range(n_frames):
        f: dict[str, Any] = {"_id": f"{answer_id}-{i}", "session_id": session_id, "answer_id": answer_id,
                             "t": int(t[i]), "face": bool(face[i]), "tracked": bool(i % 3)}
        if face[i]:
            p = probs[i]
            k = int(np.argmax(p))
            score = float(np.clip(0.7 + 0.2 * np.sin(i / 200.0) + rng.normal(0, 0.05), 0, 1))
            f.update({
                "box": [260, 80, 150, 150],
                "emotions": {e: round(float(v), 5) for e, v in zip(EMOTIONS, p, strict=True)},
                "dominant": EMOTIONS[k], "confidence": round(float(p[k]), 5), "uncertain": bool(p[k] < 0.35),
                "gaze": {"eye_contact": score >= 0.6, "score": round(score, 4), "eyes_found": 2, "frontal": True,
                         "offset": [0.03, -0.07]},
                "head": {"movement": round(float(abs(rng.normal(0, 0.02))), 4), "yaw_proxy": 0.0, "pitch_proxy": 0.0},
            })
        else:
            f.update({"box": None, "emotions": None, "dominant": None, "confidence": None, "uncertain": False,
                      "gaze": {"eye_contact": None, "score": None, "eyes_found": 0, "frontal": False, "offset": None},
                      "head": {"movement": None, "yaw_proxy": None, "pitch_proxy": None}})
        frames.append(f)
    # Words: wpm on average; every ~90th word a filler, every ~60th gap a 1.5-4 s pause.
    n_words = int(round(minutes * wpm))
    words: list[dict[str, Any]] = []
    pauses: list[dict[str, float]] = []
    gap = (duration - 2.75 * n_words / 60) / n_words  # room for the pauses below
    s = 0.2
    for i in range(n_words):
        w = "um" if i % 90 == 45 else VOCAB[i % len(VOCAB)]
        e = s + gap * 0.7
        words.append({"word": w, "start": round(s, 3), "end": round(e, 3), "probability": 0.9,
                      "t_ms": audio_ms + int(round(s * 1000)), "end_ms": audio_ms + int(round(e * 1000))})
        s += gap
        if i % 60 == 59:  # a 1.5-4 s silence after every 60th word
            extra = float(rng.uniform(1.5, 4.0))
            pauses.append({"start": round(e, 3), "end": round(s + extra, 3), "duration": round(s + extra - e, 3)})
            s += extra
    hop = 0.05
    n_hop = int(duration / hop)
    pitch = np.where(rng.random(n_hop) < 0.35, 180 + 30 * np.sin(np.arange(n_hop) / 40.0), np.nan)
    energy = -40 + 8 * np.sin(np.arange(n_hop) / 25.0)
    fillers = [{"phrase": "um", "text": "um", "start": w["start"], "end": w["end"], "word_index": i}
               for i, w in enumerate(words) if w["word"] == "um"]
    answer = {
        "_id": answer_id, "session_id": session_id, "index": 0, "question": "Tell me about a system you built.",
        "reference": "I built a cache. It reduced latency. I measured it with load tests. It scaled to many users.",
        "key_points": ["built a cache", "reduced latency", "measured with load tests", "scaled to many users"],
        "status": "complete", "started_ms": T0_MS, "ended_ms": T0_MS + int(duration * 1000) + 1000,
        "audio_started_ms": audio_ms, "transcript": " ".join(w["word"] for w in words)[:100_000], "words": words,
        "metrics": {
            "has_speech": True, "word_count": n_words, "duration_s": duration, "speaking_s": duration - 0.5,
            "wpm": wpm, "pace_band": "ok",
            "pace_track": [{"t": float(x), "wpm": round(float(wpm + 20 * np.sin(x / 30.0)), 1)}
                           for x in np.arange(10.0, duration, 1.0)],
            "fillers": fillers, "filler_count": len(fillers), "fillers_per_minute": len(fillers) / minutes,
            "pauses": pauses, "longest_pause_s": max((p["duration"] for p in pauses), default=None),
            "prosody": {"hop_seconds": hop, "t": np.round(np.arange(n_hop) * hop + hop / 2, 3).tolist(),
                        "energy_db": np.round(energy, 1).tolist(),
                        "pitch_hz": [None if np.isnan(v) else round(float(v), 1) for v in pitch],
                        "voiced_fraction": 0.35, "pitch_median_hz": 180.0, "pitch_p10_hz": 150.0,
                        "pitch_p90_hz": 210.0, "pitch_range_semitones": 5.0},
        },
        "grade": {"score": 0.72, "band": "good", "raw_cosine": 0.61, "calibrated": 0.7, "coverage": 0.75,
                  "matched": [{"key_point": "built a cache", "span": "the system uses a cache", "start": 1.0, "end": 3.0,
                               "similarity": 0.71},
                              {"key_point": "reduced latency", "span": "so we reduce latency", "start": duration * 0.2,
                               "end": duration * 0.2 + 2.0, "similarity": 0.66},
                              {"key_point": "measured with load tests", "span": "I measured it with load tests",
                               "start": duration * 0.5, "end": duration * 0.5 + 3.0, "similarity": 0.8}],
                  "missed": [{"key_point": "scaled to many users", "best_similarity": 0.31}],
                  "flags": [], "key_point_source": "author"},
        "features": {"key_points": [{"key_point": "scaled to many users", "span": "which showed results",
                                     "start": duration * 0.7, "end": duration * 0.7 + 1.5, "best_similarity": 0.31}]},
    }
    return answer, frames


def _time(fn: Any, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--minutes", type=float, default=60.0)
    args = ap.parse_args()
    answer, frames = synthetic_answer(args.minutes)
    before = copy.deepcopy((answer, frames[:50]))
    opts = ReportOptions()
    fig = answer_timeline(answer, frames, opts)
    points = sum(len(tr.x) for tr in fig.data if tr.x is not None)
    biggest = max(len(tr.x) for tr in fig.data if tr.x is not None)
    payload = len(fig.to_json())
    summary = frame_summary(frames)
    assert (answer, frames[:50]) == before, "stored documents were modified"
    rows = [
        ("answer_timeline (figure)", _time(lambda: answer_timeline(answer, frames, opts), args.runs)),
        ("answer_timeline, emotion off", _time(lambda: answer_timeline(answer, frames,
                                                                       ReportOptions(emotion_enabled=False)), args.runs)),
        ("figure.to_json (sent to the browser)", _time(fig.to_json, args.runs)),
        ("frame_summary", _time(lambda: frame_summary(frames), args.runs)),
        ("answer_card", _time(lambda: answer_card(answer, summary, opts), args.runs)),
    ]
    print(f"Synthetic {args.minutes:g}-minute answer: {len(frames):,} frames, {len(answer['words']):,} words, "
          f"{len(answer['metrics']['prosody']['t']):,} prosody points, "
          f"{len(answer['metrics']['pace_track']):,} pace points; max_display_points={opts.max_display_points}.\n")
    print("| step | median (s) | best (s) |")
    print("|---|---:|---:|")
    for name, (med, best) in rows:
        print(f"| {name} | {med:.3f} | {best:.3f} |")
    total = rows[0][1][0] + rows[2][1][0]
    print(f"\nFigure: {len(fig.data)} traces, {points:,} points in all (largest trace {biggest:,}; the words trace "
          f"keeps every word), JSON {payload / 1e6:.2f} MB. Figure + JSON median {total:.3f} s (goal < 1 s).")


if __name__ == "__main__":
    main()
