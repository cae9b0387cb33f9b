"""Benchmark of the sidebar what-if (pipeline.whatif): the 60-minute session's report re-rendered under
a changed threshold set, beside today's report render, in one run.

    python bench/bench_whatif.py [--runs 5] [--minutes 60]

Uses bench_report's synthetic answer (27,000 frames, 9,000 words for 60 min) with grading features
shaped like the grader's. "Report render" is what the page does per answer today: answer_timeline,
its JSON, answer_card_view (frame summary + card). "What-if re-render" adds what the panel does on a
slider change: validate the values, re-score the session in memory (whatif_session), the new report
options; then the same render. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_report import _time, synthetic_answer  # noqa: E402
from pipeline.card import answer_card_view  # noqa: E402
from pipeline.grading_features import GradeFeatures, KeyPointEvidence  # noqa: E402
from pipeline.grading_score import GradeOptions, default_calibration, score  # noqa: E402
from pipeline.profiles import settings_with  # noqa: E402
from pipeline.report import ReportOptions  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.timeline import answer_timeline  # noqa: E402
from pipeline.whatif import whatif_session  # noqa: E402

CHANGE = {"keypoint_match_threshold": 0.3, "pause_seconds": 2.5, "band_cutoffs": (0.3, 0.5, 0.7)}


def _with_features(answer: dict[str, Any], base: Settings) -> dict[str, Any]:
    cal = default_calibration()
    values = {n: float(lo + 0.55 * (hi - lo)) for n, lo, hi in zip(cal.features, cal.lo, cal.hi, strict=True)}
    values.update({"cos_question": 0.45, "log_words": math.log1p(len(answer["words"]))})
    kps = [KeyPointEvidence(k, s, "the system uses a cache", 60.0 * (i + 1), 60.0 * (i + 1) + 2, 10 * i, 10 * i + 4)
           for i, (k, s) in enumerate(zip(answer["key_points"], (0.71, 0.46, 0.8, 0.31), strict=True))]
    f = GradeFeatures(False, len(answer["words"]), values, kps, "author", model_id="bench")
    return {**answer, "features": f.to_dict(), "grade": score(f, GradeOptions.from_settings(base)).to_dict()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--minutes", type=float, default=60.0)
    args = ap.parse_args()
    base = Settings()
    answer, frames = synthetic_answer(args.minutes)
    answer = _with_features(answer, base)
    session = {"_id": "s-bench", "grade": answer["grade"]["score"], "band": answer["grade"]["band"], "flags": []}

    def render(doc: dict[str, Any], opts: ReportOptions) -> None:
        answer_timeline(doc, frames, opts).to_json()
        answer_card_view(doc, frames, opts)

    def today() -> None:
        render(answer, ReportOptions.from_settings(base))

    def whatif() -> None:
        s = settings_with(base, CHANGE)
        result = whatif_session(session, [answer], s)
        render(result.answers[0], ReportOptions.from_settings(s))

    def rescore_only() -> None:
        whatif_session(session, [answer], settings_with(base, CHANGE))

    result = whatif_session(session, [answer], settings_with(base, CHANGE))
    pauses = (sum(1 for p in answer["metrics"]["pauses"] if p["duration"] >= base.speech.pause_seconds),
              sum(1 for p in answer["metrics"]["pauses"] if p["duration"] >= CHANGE["pause_seconds"]))
    rows = [
        ("report render today (timeline + JSON + card)", _time(today, args.runs)),
        ("what-if re-score only (validate + whatif_session)", _time(rescore_only, args.runs)),
        ("what-if re-render (re-score + timeline + JSON + card)", _time(whatif, args.runs)),
    ]
    print(f"Synthetic {args.minutes:g}-minute session: {len(frames):,} frames, {len(answer['words']):,} words; "
          f"what-if {CHANGE}: {result.change.text()}; pause marks {pauses[0]} -> {pauses[1]}.\n")
    print("| step | median (s) | best (s) |")
    print("|---|---:|---:|")
    for name, (med, best) in rows:
        print(f"| {name} | {med:.4f} | {best:.4f} |")
    print(f"\nWhat-if re-render median {rows[2][1][0]:.3f} s (goal < 1 s), "
          f"{rows[2][1][0] - rows[0][1][0]:+.3f} s beside today's render.")


if __name__ == "__main__":
    main()
