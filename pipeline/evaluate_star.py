"""``python -m pipeline.evaluate star``: STAR part detection on the labelled set (pipeline/eval_data/star.jsonl)
with question-disjoint folds; per-part sentence-level precision/recall/F1; ``--fit-out`` writes star_model.json."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.star import FEATURE_NAMES, LABELS, PARTS, StarModel, segment, sentence_features

DATA_PATH = Path(__file__).with_name("eval_data") / "star.jsonl"
DEFAULT_C = 0.5


def load_star_set(path: Path = DATA_PATH) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in rows:
        bad = [s["label"] for s in r["sentences"] if s["label"] not in LABELS]
        if bad:
            raise SystemExit(f"{r['id']}: unknown labels {bad}")
    return rows


def timed_words(texts: Sequence[str], start: float = 1.0, step: float = 0.4) -> list[dict[str, Any]]:
    """Whisper-style words at a regular pace, so the set goes through the same segmentation as a live answer."""
    words = [w for t in texts for w in t.split()]
    return [{"word": " " + w, "start": round(start + i * step, 3), "end": round(start + i * step + 0.3, 3)}
            for i, w in enumerate(words)]


def asr_like(texts: Sequence[str], rng: np.random.Generator) -> list[str]:
    """The sentences as a recogniser may punctuate them: each full stop kept, turned into a comma (next word
    lower-cased), or dropped (next word keeps its capital), one third each."""
    out = list(texts)
    for i in range(len(out) - 1):
        choice = int(rng.integers(3))
        if choice == 0 or not out[i].endswith("."):
            continue
        out[i] = out[i][:-1] + ("," if choice == 1 else "")
        head, _, rest = out[i + 1].partition(" ")
        if choice == 1 and head not in ("I", "I'm", "I've", "I'd"):
            out[i + 1] = (head[:1].lower() + head[1:] + " " + rest).strip()
    return out


@dataclass
class Answer:
    """One labelled answer as the live code cuts it: features and labels of its units, and for each unit
    the labelled sentence it starts in (scoring is per labelled sentence, by majority of its words)."""

    x: np.ndarray
    unit_gold: list[str]
    unit_words: list[tuple[int, int]]
    sentence_gold: list[str]
    sentence_of_word: list[int]


def answer_features(encoder: Any, rows: Sequence[dict[str, Any]], asr_seed: int | None = None) -> list[Answer]:
    """Features of each answer's units (sentences and clauses) as ``segment`` cuts them; ``asr_seed`` first
    re-punctuates the text like a recogniser may (``asr_like``)."""
    rng = np.random.default_rng(asr_seed)
    out = []
    for r in rows:
        texts = [s["text"] for s in r["sentences"]]
        if asr_seed is not None:
            texts = asr_like(texts, rng)
        gold = [s["label"] for s in r["sentences"]]
        of_word = [k for k, t in enumerate(texts) for _ in t.split()]
        units = segment(timed_words(texts))
        unit_gold = [Counter(gold[of_word[i]] for i in range(u.first, u.stop)).most_common(1)[0][0] for u in units]
        out.append(Answer(sentence_features(encoder, r["question"], [u.text for u in units]), unit_gold,
                          [(u.first, u.stop) for u in units], gold, of_word))
    return out


def sentence_labels(ans: Answer, unit_pred: Sequence[str]) -> list[str]:
    """Each labelled sentence's predicted label: the label most of its words got."""
    votes: list[Counter[str]] = [Counter() for _ in ans.sentence_gold]
    for (a, b), lab in zip(ans.unit_words, unit_pred, strict=True):
        for i in range(a, b):
            votes[ans.sentence_of_word[i]][lab] += 1
    return [v.most_common(1)[0][0] if v else "O" for v in votes]


def fit_model(xs: Sequence[np.ndarray], ys: Sequence[Sequence[str]], c: float = DEFAULT_C) -> StarModel:
    """Logistic regression (balanced classes) on standardized features + add-one label transitions."""
    from sklearn.linear_model import LogisticRegression

    x = np.vstack(xs)
    y = np.array([LABELS.index(lab) for seq in ys for lab in seq])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit((x - mean) / scale, y)
    coef = np.zeros((len(LABELS), x.shape[1]))
    icept = np.full(len(LABELS), -30.0)  # a label absent from the training data is never predicted
    for k, cls in enumerate(clf.classes_):
        coef[cls], icept[cls] = clf.coef_[k], clf.intercept_[k]
    start = np.ones(len(LABELS))
    trans = np.ones((len(LABELS), len(LABELS)))
    for seq in ys:
        idx = [LABELS.index(lab) for lab in seq]
        if idx:
            start[idx[0]] += 1
        for a, b in zip(idx, idx[1:], strict=False):
            trans[a, b] += 1
    return StarModel(FEATURE_NAMES, mean, scale, coef, icept, np.log(start / start.sum()),
                     np.log(trans / trans.sum(axis=1, keepdims=True)))


def prf(pred: Sequence[str], gold: Sequence[str], part: str) -> tuple[float, float, float]:
    tp = sum(p == part and g == part for p, g in zip(pred, gold, strict=True))
    n_pred, n_gold = sum(p == part for p in pred), sum(g == part for g in gold)
    prec = tp / n_pred if n_pred else 0.0
    rec = tp / n_gold if n_gold else 0.0
    return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)


def cross_validate(rows: Sequence[dict[str, Any]], xs: Sequence[Answer], folds: int, seed: int,
                   c: float = DEFAULT_C, out: Any = sys.stdout) -> dict[str, float]:
    """Question-disjoint folds; returns per-part sentence F1 and presence F1, and ``star_f1`` (sentence macro)."""
    from pipeline.evaluate import question_folds

    ys = [a.sentence_gold for a in xs]
    qids = [r["question_id"] for r in rows]
    pred: list[list[str]] = [[] for _ in rows]
    for i, fold in enumerate(question_folds(qids, folds, seed), 1):
        test = [k for k, q in enumerate(qids) if q in fold]
        train = [k for k in range(len(rows)) if qids[k] not in fold]
        model = fit_model([xs[k].x for k in train], [xs[k].unit_gold for k in train], c)
        for k in test:
            pred[k] = sentence_labels(xs[k], [LABELS[j] for j in model.decode(model.probabilities(xs[k].x))])
        g = [lab for k in test for lab in ys[k]]
        p = [lab for k in test for lab in pred[k]]
        fold_f1 = float(np.mean([prf(p, g, part)[2] for part in PARTS]))
        print(f"fold={i} questions={len(fold)} answers={len(test)} sentences={len(g)} macro_f1={fold_f1:.4f}", file=out)
    gold = [lab for seq in ys for lab in seq]
    flat = [lab for seq in pred for lab in seq]
    result: dict[str, float] = {}
    for part in PARTS:
        prec, rec, f1 = prf(flat, gold, part)
        has_p = [part in seq for seq in pred]
        has_g = [part in seq for seq in ys]
        tp = sum(a and b for a, b in zip(has_p, has_g, strict=True))
        pp = tp / max(sum(has_p), 1)
        pr = tp / max(sum(has_g), 1)
        pf = 2 * pp * pr / (pp + pr) if pp + pr else 0.0
        result[part], result[f"presence_{part}"] = f1, pf
        print(f"part={part} sentences precision={prec:.4f} recall={rec:.4f} f1={f1:.4f} | "
              f"presence precision={pp:.4f} recall={pr:.4f} f1={pf:.4f}", file=out)
    acc = float(np.mean([a == b for a, b in zip(flat, gold, strict=True)]))
    result["presence_f1"] = float(np.mean([result[f"presence_{p}"] for p in PARTS]))
    result["star_f1"] = float(np.mean([result[p] for p in PARTS]))
    print(f"{len(rows)} answers, {len(set(qids))} questions, {len(gold)} sentences, folds={folds} seed={seed} "
          f"C={c:g}; sentence accuracy (5 labels)={acc:.4f} presence_macro_f1={result['presence_f1']:.4f}", file=out)
    return result


def add_parser(sub: Any) -> None:
    s = sub.add_parser("star", help="cross-validate (and optionally refit) STAR part detection")
    s.add_argument("--data", default=str(DATA_PATH), help="labelled STAR set (JSON lines)")
    s.add_argument("--folds", type=int, default=5)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--c", type=float, default=DEFAULT_C, help="inverse L2 penalty of the logistic model")
    s.add_argument("--cache-dir", default="data/cache", help="embedding cache folder")
    s.add_argument("--asr-like", action="store_true",
                   help="also score the set re-punctuated like a recogniser may (full stops dropped or commas)")
    s.add_argument("--fit-out", default="", help="also fit on every answer and write the model JSON here")


def run(args: argparse.Namespace) -> int:
    from pipeline.encoder import SentenceEncoder

    rows = load_star_set(Path(args.data))
    enc = SentenceEncoder(threads=1)
    cache = Path(args.cache_dir) / "star_embeddings.npz"
    enc.load_cache(cache)
    xs = answer_features(enc, rows)
    enc.save_cache(cache)
    if args.asr_like:
        print("ASR-like punctuation (a third of the full stops kept, a third commas, a third dropped):")
        asr = cross_validate(rows, answer_features(enc, rows, asr_seed=args.seed), args.folds, args.seed, args.c)
        print(f"asr_like_star_f1={asr['star_f1']:.4f}")
        print("As written:")
    res = cross_validate(rows, xs, args.folds, args.seed, args.c)
    if args.fit_out:
        model = fit_model([a.x for a in xs], [a.unit_gold for a in xs], args.c)
        meta = {"encoder_model_id": enc.model_id, "data": Path(args.data).name, "n_answers": len(rows),
                "n_questions": len({r["question_id"] for r in rows}), "C": args.c,
                "fitted_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "cv": {"folds": args.folds, "seed": args.seed, "star_f1": round(res["star_f1"], 4)},
                "refit": "python -m pipeline.evaluate star --fit-out pipeline/star_model.json"}
        Path(args.fit_out).write_text(json.dumps({**model.to_dict(), **meta}, indent=1) + "\n", encoding="utf-8")
        print(f"wrote STAR model to {args.fit_out}", file=sys.stderr)
    print(f"star_f1={res['star_f1']:.4f} (sentence-level macro over S/T/A/R, held-out questions)", flush=True)
    return 0
