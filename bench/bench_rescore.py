"""Benchmark of pipeline.rescore: 1,000 stored sessions x 3 answers re-scored with a new profile.

    python bench/bench_rescore.py [--sessions 1000] [--answers 3] [--words 150]

Starts its own embedded SecantusDB (as the app does: sync on commit) in a temporary folder,
stores synthetic sessions shaped like the sidecar's (timed words with fillers and pauses,
speech metrics, grading features built through pipeline.grading's public records, the
grade they give, the settings snapshot), then times, with no model loaded:
- preview (write=False) of a grading-only profile (band cut-offs, off-topic floor);
- preview of a profile that also changes the filler list and pause length (speech metrics
  recomputed from the stored words);
- apply (write=True) of each through the app's journaled writer (one journal batch, then
  flushed: what the Research page does; there is no direct write any more);
- the calibration view (aggregation per session).
Goal: re-scoring 1,000 sessions x 3 answers in < 10 s. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pymongo
from pymongo import UpdateOne

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repo importable
    sys.path.insert(0, str(ROOT))

from pipeline.calibration import calibration_view  # noqa: E402
from pipeline.grading_features import GradeFeatures, KeyPointEvidence  # noqa: E402
from pipeline.grading_score import GradeOptions, band_for, default_calibration, score  # noqa: E402
from pipeline.profiles import settings_with  # noqa: E402
from pipeline.rescore import rescore  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.speech_metrics import SpeechMetricsOptions, compute_speech_metrics  # noqa: E402
from pipeline.storage import EmbeddedServer, ensure_indexes  # noqa: E402
from pipeline.writer import BatchedWriter, WriterOptions  # noqa: E402

VOCAB = ["the", "system", "uses", "a", "cache", "so", "we", "reduce", "latency", "and", "then", "I", "measured",
         "it", "with", "load", "tests", "which", "showed", "results", "um", "uh", "like"]
T0 = datetime(2025, 11, 1, 9, 0, tzinfo=UTC)


def synthetic_words(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    out, t = [], 0.4
    for w in rng.choice(VOCAB, size=n):
        d = float(rng.uniform(0.15, 0.45))
        out.append({"word": str(w), "start": round(t, 3), "end": round(t + d, 3), "probability": 0.9,
                    "t_ms": 1_760_000_000_000 + int(t * 1000), "end_ms": 1_760_000_000_000 + int((t + d) * 1000)})
        t += d + (float(rng.uniform(1.0, 3.0)) if rng.random() < 0.05 else 0.05)
    return out


def synthetic_features(rng: np.random.Generator, n_words: int) -> GradeFeatures:
    cal = default_calibration()
    q = float(rng.beta(3, 2))
    values = {n: float(lo + np.clip(q + rng.normal(0, 0.1), 0, 1) * (hi - lo))
              for n, lo, hi in zip(cal.features, cal.lo, cal.hi, strict=True)}
    values.update({"cos_question": 0.2 + 0.4 * q, "log_words": math.log1p(n_words)})
    kps = [KeyPointEvidence(f"key point {k}", float(np.clip(q + rng.normal(0, 0.2), 0, 1)), "span of eight words "
                            "from the answer", 1.0 + k, 4.0 + k, k, k + 7) for k in range(5)]
    return GradeFeatures(False, n_words, values, kps, "author", model_id="bench")


def populate(db: Any, n_sessions: int, n_answers: int, n_words: int, settings: Settings) -> None:
    rng = np.random.default_rng(0)
    opts, speech = GradeOptions.from_settings(settings), SpeechMetricsOptions.from_settings(settings)
    snapshot = settings.snapshot()  # what a session stores (flat names), as pipeline.interview does
    sessions, answers = [], []
    for s in range(n_sessions):
        sid = f"s{s:05d}"
        scores = []
        for i in range(n_answers):
            words = synthetic_words(rng, n_words)
            f = synthetic_features(rng, n_words)
            g = score(f, opts)
            scores.append(g.score)
            metrics = compute_speech_metrics(words, options=speech).as_dict()
            answers.append({"_id": f"{sid}-a{i}", "session_id": sid, "index": i, "question": "Tell me about a cache.",
                            "reference": "A cache keeps hot data close.", "key_points": [], "status": "complete",
                            "transcript": " ".join(w["word"] for w in words), "words": words, "metrics": metrics,
                            "grade": g.to_dict(), "features": f.to_dict()})
        mean = sum(scores) / len(scores)
        sessions.append({"_id": sid, "candidate": f"Candidate {s}", "role": "software", "status": "analysed",
                         "started_at": T0 + timedelta(minutes=s), "settings": snapshot, "grade": mean,
                         "band": band_for(mean, settings.grading.band_cutoffs), "flags": []})
    for i in range(0, len(answers), 600):
        db.answers.insert_many(answers[i : i + 600], ordered=False)
    db.sessions.insert_many(sessions, ordered=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--answers", type=int, default=3)
    ap.add_argument("--words", type=int, default=150, help="words per answer (~1 minute of speech)")
    args = ap.parse_args(argv)

    base = Settings(mongodb_uri=None)
    grading = settings_with(base, {"band_cutoffs": (0.45, 0.65, 0.85), "off_topic_similarity": 0.2})
    speech = settings_with(grading, {"filler_words": ("um", "uh", "so", "like", "you know"), "pause_seconds": 1.5,
                                     "pace_low_wpm": 120.0})
    with tempfile.TemporaryDirectory(prefix="bench_rescore_") as tmp:
        server = EmbeddedServer(Path(tmp) / "db").start()
        client: pymongo.MongoClient = pymongo.MongoClient(server.uri, tz_aware=True)
        try:
            db = client.bench
            ensure_indexes(db)
            t = time.perf_counter()
            populate(db, args.sessions, args.answers, args.words, base)
            setup_s = time.perf_counter() - t
            rows = []
            n = f"{args.sessions} x {args.answers}"
            writer = BatchedWriter(lambda: db, WriterOptions(journal_dir=Path(tmp) / "journal", name="bench"))
            for label, settings, write, prof, via in (
                ("preview, grading thresholds", grading, False, None, None),
                ("preview, + fillers/pause/pace", speech, False, None, None),
                ("apply through the journaled writer, grading thresholds", grading, True, ("grading", 2), writer),
                ("apply through the journaled writer, + fillers/pause/pace", speech, True, ("speech", 2), writer),
            ):
                r = rescore(db, settings, write=write, profile=prof, writer=via)
                tm = r.timings
                rows.append((label, n, r.rescored, r.band_changes, tm["read_s"], tm["score_s"], tm["speech_s"],
                             tm["write_s"], tm["total_s"]))
                if write:
                    split = {k: v for k, v in tm.items()
                             if k.startswith(("write_", "commit", "journal", "flush")) and k != "write_s"}
                    print(f"{label}: write split {split}", file=sys.stderr)
            # The write step as it was before answer_scores: the same new grades set in place on
            # the (large) answer documents, in one transaction.
            scored = list(db.answer_scores.find({}, {"grade": 1, "profile": 1, "rescored_at": 1}))
            ops = [UpdateOne({"_id": d["_id"]}, {"$set": {k: d[k] for k in ("grade", "profile", "rescored_at")}})
                   for d in scored]
            t = time.perf_counter()
            with client.start_session() as session, session.start_transaction():
                db.answers.bulk_write(ops, ordered=False, session=session)
            in_place_s = time.perf_counter() - t
            rows.append(("write step only, grades set in place on the answers (before)", n, len(ops), "", "", "", "",
                         round(in_place_s, 3), ""))
            t = time.perf_counter()
            view = calibration_view(db)
            cal_s = time.perf_counter() - t
            writer.close()
        finally:
            client.close()
            server.stop()

    print(f"Re-score benchmark: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"embedded SecantusDB (sync on commit); {args.words} words per answer; setup {setup_s:.1f} s\n")
    print("| run | sessions x answers | answers re-scored | band changes | read s | score s | speech s | write s "
          "| total s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(v) for v in r) + " |")
    print(f"| calibration view (per session) | {args.sessions} sessions | {view.rows} rows | | | | | | "
          f"{cal_s:.3f} |")
    print("\nGoal: < 10 s for 1,000 sessions x 3 answers.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
