"""Benchmark of pipeline.grading: end of answer -> grade, and re-scoring stored features.

    python bench/bench_grading.py [--runs 10] [--threads 1]

A 60 s spoken answer is ~150 words (Whisper-style timed words, 0.4 s each) with 5 author key
points. The encoder is loaded and warmed first (the worker does this at start). Every timed
answer is a different text so the encoder's text cache cannot hide the model cost; two cases:
- cold: nothing about the question was encoded before the answer ended;
- primed: question, reference and key points were encoded when the question was shown
  (what the worker can do while the candidate speaks), so only answer text reaches the model.
score() alone is timed on 1,000 stored feature sets (JSON dicts, as MongoDB returns them).
Prints a markdown table with ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repo importable
    sys.path.insert(0, str(ROOT))

from pipeline import grading  # noqa: E402
from pipeline.encoder import SentenceEncoder  # noqa: E402

QUESTION = "What is a hash table and how does it handle collisions?"
REFERENCE = (
    "A hash table stores key-value pairs in an array of buckets. A hash function maps each key to a "
    "bucket index, giving average constant-time lookup, insertion and deletion. Collisions happen when two "
    "keys map to the same bucket; they are resolved by separate chaining, where each bucket holds a linked "
    "list, or by open addressing, where the table probes for another free slot. The table is resized when "
    "the load factor grows too high."
)
KEY_POINTS = [
    "A hash function maps keys to bucket indexes",
    "Average constant-time lookup and insertion",
    "Collisions occur when two keys hash to the same bucket",
    "Separate chaining or open addressing resolve collisions",
    "Resize the table when the load factor is high",
]
SENTENCES = [
    "So a hash table is basically a data structure that stores key value pairs.",
    "You have an array of buckets and a hash function that maps the key to an index in that array.",
    "Because of that lookups inserts and deletes are constant time on average.",
    "A collision is when two different keys hash to the same bucket.",
    "There are two main ways to deal with it.",
    "One is separate chaining where every bucket keeps a linked list of the entries that landed there.",
    "The other is open addressing where if the slot is taken you probe for the next free slot.",
    "Linear probing and quadratic probing are the usual probe sequences.",
    "When the load factor gets too high you resize the table and rehash everything.",
    "Python dictionaries and Java hash maps are both built this way.",
    "A good hash function spreads the keys evenly so the chains stay short.",
    "In the worst case every key lands in one bucket and lookups become linear.",
    "I used one in my last project to cache database results by user id.",
    "Deleting with open addressing needs tombstones so probe sequences are not broken.",
    "Um honestly I think that covers the main ideas.",
]
ANSWER_SECONDS = 60.0
ANSWER_WORDS = 150


def make_answer(rng: random.Random) -> tuple[str, list[dict]]:
    """A distinct ~150-word answer with Whisper-style words spread over 60 s."""
    words: list[str] = []
    while len(words) < ANSWER_WORDS:
        words += rng.choice(SENTENCES).split()
    words = words[:ANSWER_WORDS]
    words[rng.randrange(len(words))] += f" {rng.randrange(10**6)}"  # defeat the text cache
    tokens = " ".join(words).split()
    step = ANSWER_SECONDS / len(tokens)
    timed = [
        {"word": " " + w, "start": round(i * step, 3), "end": round((i + 0.8) * step, 3), "probability": 0.9}
        for i, w in enumerate(tokens)
    ]
    return " ".join(tokens), timed


def median_p90(xs: list[float]) -> tuple[float, float]:
    s = sorted(xs)
    return statistics.median(s), s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (Settings.grading_threads)")
    ap.add_argument("--stored", type=int, default=1000)
    args = ap.parse_args()

    t0 = time.perf_counter()
    enc = SentenceEncoder(threads=args.threads)
    load_s = time.perf_counter() - t0
    enc.warm_up()
    opts = grading.GradeOptions()
    rng = random.Random(0)
    # Warm torch on answer-sized batches (a first answer of a new shape is slower).
    for _ in range(2):
        text, words = make_answer(rng)
        grading.grade(enc, "warm up question?", "warm up reference.", ["warm up"], text, words, opts)

    cold: list[float] = []
    primed: list[float] = []
    n_texts: list[int] = []
    for i in range(args.runs):
        text, words = make_answer(rng)
        q, ref = f"{QUESTION} ({i})", f"{REFERENCE} ({i})"  # new question each run: nothing cached
        kps = [f"{k} ({i})" for k in KEY_POINTS]
        n_texts.append(len(grading.texts_to_encode(q, ref, kps, text, words)))
        t = time.perf_counter()
        g, _ = grading.grade(enc, q, ref, kps, text, words, opts)
        cold.append(time.perf_counter() - t)
        assert g.score is not None

        text, words = make_answer(rng)
        t = time.perf_counter()
        g, _ = grading.grade(enc, q, ref, kps, text, words, opts)  # q, ref, kps now cached
        primed.append(time.perf_counter() - t)

    # 1,000 stored feature sets: real features from a few answers, stored as JSON dicts.
    stored_src = [
        grading.extract_features(enc, QUESTION, REFERENCE, KEY_POINTS, *make_answer(rng)).to_dict()
        for _ in range(5)
    ]
    stored = [json.loads(json.dumps(stored_src[i % len(stored_src)])) for i in range(args.stored)]
    objs = [grading.GradeFeatures.from_dict(d) for d in stored]
    t = time.perf_counter()
    for d in stored:
        grading.score(d, opts)
    score_dict_s = time.perf_counter() - t
    t = time.perf_counter()
    for f in objs:
        grading.score(f, opts)
    score_obj_s = time.perf_counter() - t

    cold_med, cold_p90 = median_p90(cold)
    primed_med, primed_p90 = median_p90(primed)
    per_score = score_dict_s / args.stored
    print(
        f"\nGrading, {ANSWER_WORDS}-word / {ANSWER_SECONDS:.0f} s answer, {len(KEY_POINTS)} key points, "
        f"torch threads={args.threads}, runs={args.runs}, texts per answer ~{statistics.median(n_texts):.0f} (common words hit the cache), "
        f"model load {load_s:.1f} s (once per worker), load average during run {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs\n"
    )
    print("| measurement | median | p90 | ratio |")
    print("|---|---|---|---|")
    print(
        f"| end of answer -> grade, cold (question not pre-encoded) | {cold_med * 1000:.0f} ms | "
        f"{cold_p90 * 1000:.0f} ms | {ANSWER_SECONDS / cold_med:.0f}x faster than the answer |"
    )
    print(
        f"| end of answer -> grade, primed (question/reference/key points pre-encoded) | {primed_med * 1000:.0f} ms | "
        f"{primed_p90 * 1000:.0f} ms | {cold_med / primed_med:.2f}x faster than cold |"
    )
    print(
        f"| score() x {args.stored} stored feature sets (JSON dicts) | {score_dict_s * 1000:.1f} ms total | "
        f"{per_score * 1e6:.1f} us each | {primed_med / per_score:,.0f}x faster than one grade |"
    )
    print(
        f"| score() x {args.stored} (GradeFeatures objects) | {score_obj_s * 1000:.1f} ms total | "
        f"{score_obj_s / args.stored * 1e6:.1f} us each | {score_dict_s / score_obj_s:.1f}x faster than from dicts |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
