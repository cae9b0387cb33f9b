"""``python -m pipeline.evaluate keypoints``: question-disjoint cross-validation (and refit) of the
key-point "covered" model on the hand-labelled set in pipeline/eval_data/kp_*.jsonl."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from pipeline.grading_features import Token
from pipeline.keypoints import FEATURES, KeypointModel, answer_spans, key_point_words, match_key_points

EVAL_DATA = Path(__file__).with_name("eval_data")
QUESTION_SETS = Path(__file__).with_name("question_sets")
DEFAULT_C = 1.0


def load_examples(data_dir: Path = EVAL_DATA) -> list[dict[str, Any]]:
    """One example per (key point, text): label 1 for a paraphrase that covers it, 0 for a
    near-miss on the same topic or an off-topic text given for its question."""
    kps: dict[str, list[str]] = {}
    for path in sorted(QUESTION_SETS.glob("*.json")):
        for q in json.loads(path.read_text(encoding="utf-8"))["questions"]:
            kps[q["id"]] = list(q.get("key_points") or [])
    per_kp: list[dict[str, Any]] = []
    off: dict[str, list[str]] = {}
    for path in sorted(data_dir.glob("kp_*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if row["q"] not in kps:
                raise SystemExit(f"{path.name}: unknown question id {row['q']!r}")
            if "off_topic" in row:
                off.setdefault(row["q"], []).extend(row["off_topic"])
            else:
                per_kp.append(row)
    out: list[dict[str, Any]] = []
    for row in per_kp:
        kp = kps[row["q"]][int(row["kp"])]
        base = {"question": row["q"], "key_point": kp}
        out += [{**base, "text": t, "label": 1, "kind": "paraphrase"} for t in row["covers"]]
        out += [{**base, "text": t, "label": 0, "kind": "near_miss"} for t in row["near"]]
        out += [{**base, "text": t, "label": 0, "kind": "off_topic"} for t in off.get(row["q"], [])]
    return out


def example_features(
    examples: Sequence[dict[str, Any]], model: str | None, cache_dir: Path | None, log: Callable[[str], object]
) -> np.ndarray:
    """The live matcher's features (pipeline.keypoints.match_key_points) for every example."""
    from pipeline.encoder import SentenceEncoder  # model code only when features are needed

    enc = SentenceEncoder(model, threads=1)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"keypoints_{re.sub(r'[^A-Za-z0-9]+', '_', enc.model_id)[:60]}.npz"
        log(f"cache: {cache} ({enc.load_cache(cache)} vectors)")
    prepared = []
    texts: dict[str, None] = {}
    for ex in examples:
        toks = [Token(w, None, None) for w in ex["text"].split()]
        spans = answer_spans(toks)
        prepared.append((toks, spans))
        texts.update(dict.fromkeys([ex["key_point"], *spans.texts, *spans.words, *key_point_words(ex["key_point"])]))
    todo = list(texts)
    vecs = dict(zip(todo, np.asarray(enc.encode(todo), dtype=np.float32), strict=True))
    if cache is not None:
        enc.save_cache(cache)
    rows = []
    for ex, (toks, spans) in zip(examples, prepared, strict=True):
        ev = match_key_points([ex["key_point"]], toks, spans, vecs)[0]
        rows.append([(ev.features or {}).get(f, 0.0) for f in FEATURES])
    return np.array(rows, dtype=np.float64)


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float) -> KeypointModel:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    lr = LogisticRegression(C=c, max_iter=1000).fit((x - mean) / scale, y)
    return KeypointModel(
        features=FEATURES,
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        coef=tuple(float(v) for v in lr.coef_[0]),
        intercept=float(lr.intercept_[0]),
    )


def _prf(pred: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    tp = float(np.sum(pred & (y == 1)))
    p = tp / max(1.0, float(pred.sum()))
    r = tp / max(1.0, float((y == 1).sum()))
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def run_keypoints(args: argparse.Namespace) -> int:
    from pipeline.evaluate import question_folds

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    examples = load_examples(Path(args.data_dir))
    x = example_features(examples, args.model, None if args.no_cache else Path(args.cache_dir), log)
    y = np.array([ex["label"] for ex in examples])
    questions = [ex["question"] for ex in examples]
    prob = np.full(len(examples), np.nan)
    for i, fold in enumerate(question_folds(questions, args.folds, args.seed), 1):
        test = np.array([q in fold for q in questions])
        m = fit_logistic(x[~test], y[~test], args.c)
        prob[test] = [m.probability(dict(zip(FEATURES, row, strict=True))) for row in x[test]]
        p, r, f1 = _prf(prob[test] >= args.threshold, y[test])
        print(f"fold={i} questions={len(fold)} examples={int(test.sum())} precision={p:.3f} recall={r:.3f} f1={f1:.3f}")
    pred = prob >= args.threshold
    kinds = np.array([ex["kind"] for ex in examples])
    for kind in ("paraphrase", "near_miss", "off_topic"):
        sel = kinds == kind
        print(f"{kind}: {int(sel.sum())} examples, called covered {float(pred[sel].mean()):.3f}")
    cos_only = x[:, FEATURES.index("kp_cos_max")] >= args.baseline_cosine
    bp, br, bf = _prf(cos_only, y)
    print(f"baseline max span cosine >= {args.baseline_cosine:g}: precision={bp:.3f} recall={br:.3f} f1={bf:.3f}")
    print(f"{len(examples)} examples, {int(y.sum())} covered, {len(set(questions))} questions, seed={args.seed}")
    p, r, f1 = _prf(pred, y)
    if args.fit_out:
        m = fit_logistic(x, y, args.c)
        meta = {
            "C": args.c,
            "data": "pipeline/eval_data/kp_*.jsonl",
            "n_examples": len(examples),
            "fitted_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "cv": {"folds": args.folds, "seed": args.seed, "precision": round(p, 4), "recall": round(r, 4)},
            "refit": "python -m pipeline.evaluate keypoints --fit-out pipeline/keypoint_calibration.json",
        }
        Path(args.fit_out).write_text(json.dumps({**m.to_dict(), **meta}, indent=2) + "\n", encoding="utf-8")
        log(f"wrote key-point model to {args.fit_out}")
    print(f"precision={p:.4f} recall={r:.4f} f1={f1:.4f}", flush=True)
    return 0


def add_parser(sub: Any) -> None:
    k = sub.add_parser("keypoints", help="cross-validate (and optionally refit) key-point coverage")
    k.add_argument("--folds", type=int, default=5)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--c", type=float, default=DEFAULT_C, help="inverse L2 penalty of the logistic model")
    k.add_argument("--threshold", type=float, default=0.5, help="probability that counts as covered")
    k.add_argument("--baseline-cosine", type=float, default=0.5, help="cosine threshold of the printed baseline")
    k.add_argument("--data-dir", default=str(EVAL_DATA))
    k.add_argument("--model", default=None, help="sentence model folder or name (default: packaged MiniLM)")
    k.add_argument("--cache-dir", default="data/cache", help="embedding cache folder")
    k.add_argument("--no-cache", action="store_true")
    k.add_argument("--fit-out", default="", help="also fit on every example and write the model JSON here")
