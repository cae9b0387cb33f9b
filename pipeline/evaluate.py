"""Offline evaluation and calibration.

    python -m pipeline.evaluate grading --data ../shared/data/grading/mohler_dataset_edited.csv \
        --folds 5 --seed 0 [--fit-out pipeline/grading_calibration.json]

Grading: features come from pipeline.grading.extract_features (the same code the live grader
runs); a ridge regression onto score_avg / 5 is fitted on the training folds' questions only
and predicts the held-out questions (question-disjoint folds, seeded). The last line printed is
``pearson_r=<r> rmse=<rmse>`` (RMSE on the 0-5 scale) over all held-out predictions.
``--fit-out`` also fits on every answer and writes the calibration JSON the grader loads.
Embeddings are cached under --cache-dir (default data/cache, gitignored) keyed by model.

    python -m pipeline.evaluate face --out DIR [--detectors mediapipe,mediapipe-mesh+iris,opencv] [--limit N]

Face: the validity harness (``sidecar.face_validity``) builds labelled 640x480 media from
../shared/data/faces and ../shared/data/video under DIR (media/, manifest.json), runs each
detector's EmotionAnalyzer on it (results.json) and prints, per condition and detector side by
side, face-found rate, eye-contact agreement with the label and head-pose error.

Also the ASR evaluation's ``word_error_rate`` (jiwer: a test/evaluation dependency only).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import jiwer
import numpy as np
from sklearn.linear_model import Ridge

from pipeline import evaluate_keypoints
from pipeline.agreement import pearson, rmse
from pipeline.grading_features import FEATURES_VERSION
from pipeline.grading_score import Calibration
from pipeline.mohler import grading_features, load_mohler
from pipeline.speech_metrics import normalize_tokens

GRADING_FEATURES = (
    "cos_ref",
    "cos_ref_demoted",
    "soft_recall",
    "soft_precision",
    "len_ratio",
    "len_ratio_short",
    "soft_recall_sq",
)
DEFAULT_ALPHA = 10.0
ANCHORS = "anchors: Mohler 2011 r=0.48 rmse=1.04; Sultan 2016 r=0.59 rmse=0.89; raw BERT cosine r=0.32"


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate (jiwer) on ``normalize_tokens`` of both texts (0 = identical).

    An evaluation helper (ASR tests and benchmarks); the app never computes it.
    """
    ref, hyp = normalize_tokens(reference), normalize_tokens(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    if not hyp:
        return 1.0  # every reference word deleted
    return float(jiwer.wer(" ".join(ref), " ".join(hyp)))


def question_folds(questions: Sequence[str], k: int, seed: int) -> list[set[str]]:
    """Question-disjoint folds: shuffle the distinct questions with the seed, deal them out."""
    uniq = np.array(sorted(set(questions)), dtype=object)
    if k < 2 or k > len(uniq):
        raise SystemExit(f"--folds must be between 2 and {len(uniq)} (distinct questions)")
    np.random.default_rng(seed).shuffle(uniq)
    return [set(uniq[i::k]) for i in range(k)]


def fit_ridge(x: np.ndarray, y: np.ndarray, names: Sequence[str], alpha: float) -> Calibration:
    """Ridge on standardized features with an unpenalized intercept -> grading.Calibration."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)  # a constant feature gets weight 0, not NaN
    # z is centred, so the fitted intercept is y.mean() and only the coefficients are penalized.
    model = Ridge(alpha=alpha, fit_intercept=True, solver="cholesky").fit((x - mean) / scale, y)
    return Calibration(
        features=tuple(names),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        coef=tuple(float(v) for v in model.coef_),
        intercept=float(model.intercept_),
        lo=tuple(float(v) for v in x.min(axis=0)),
        hi=tuple(float(v) for v in x.max(axis=0)),
    )


def _predict(cal: Calibration, x: np.ndarray) -> np.ndarray:
    """Vectorized Calibration.predict (same clipping of inputs and output)."""
    x = np.clip(x, np.asarray(cal.lo), np.asarray(cal.hi))
    z = (x - np.asarray(cal.mean)) / np.asarray(cal.scale)
    pred: np.ndarray = np.clip(z @ np.asarray(cal.coef) + cal.intercept, 0.0, 1.0)
    return pred


def run_grading(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rows = load_mohler(Path(args.data))
    if not rows:
        raise SystemExit(f"no usable rows in {args.data}")
    feature_names = tuple(args.features.split(",")) if args.features else GRADING_FEATURES
    x_all, names, model_id = grading_features(
        rows, args.model, None if args.no_cache else Path(args.cache_dir), log, args.threads
    )
    missing = [f for f in feature_names if f not in set(names)]
    if missing:
        raise SystemExit(f"unknown features: {missing}; available: {list(names)}")
    cols = [list(names).index(f) for f in feature_names]
    x = x_all[:, cols]
    raw = x_all[:, list(names).index("cos_ref")]
    y = np.array([float(r["score_avg"]) for r in rows])
    questions = [r["question"].strip() for r in rows]

    pred = np.full(len(rows), np.nan)
    raw_pred = np.full(len(rows), np.nan)
    folds = question_folds(questions, args.folds, args.seed)
    for i, fold in enumerate(folds, 1):
        test = np.array([q in fold for q in questions])
        cal = fit_ridge(x[~test], y[~test] / 5.0, feature_names, args.alpha)
        pred[test] = 5.0 * _predict(cal, x[test])
        # Baseline: a linear fit of the raw cosine alone, on the same training questions.
        slope, icept = np.polyfit(raw[~test], y[~test], 1)
        raw_pred[test] = np.clip(slope * raw[test] + icept, 0.0, 5.0)
        print(
            f"fold={i} questions={len(fold)} answers={int(test.sum())} "
            f"pearson_r={pearson(pred[test], y[test]):.4f} rmse={rmse(pred[test], y[test]):.4f}"
        )
    r, err = pearson(pred, y), rmse(pred, y)
    print(f"raw_cosine pearson_r={pearson(raw, y):.4f} linear_fit_rmse={rmse(raw_pred, y):.4f}")
    print(
        f"calibrated ({len(feature_names)} features, ridge alpha={args.alpha:g}, {len(rows)} answers, "
        f"{len(set(questions))} questions, seed={args.seed})"
    )
    print(ANCHORS)

    if args.fit_out:
        cal = fit_ridge(x, y / 5.0, feature_names, args.alpha)
        meta = {
            "alpha": args.alpha,
            "encoder_model_id": model_id,
            "features_version": FEATURES_VERSION,
            "data": Path(args.data).name,
            "n_answers": len(rows),
            "n_questions": len(set(questions)),
            "fitted_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "cv": {"folds": args.folds, "seed": args.seed, "pearson_r": round(r, 4), "rmse": round(err, 4)},
            "refit": "python -m pipeline.evaluate grading --data ../shared/data/grading/mohler_dataset_edited.csv "
            "--fit-out pipeline/grading_calibration.json",
        }
        out = {**cal.to_dict(), **meta}
        Path(args.fit_out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        log(f"wrote calibration to {args.fit_out}")
    print(f"pearson_r={r:.4f} rmse={err:.4f}", flush=True)
    return 0


def run_face(args: argparse.Namespace) -> int:
    # imported here: pipeline never imports sidecar at module level (the flow runs sidecar -> pipeline)
    from sidecar.face_validity import run

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    detectors = [d.strip().lower() for d in args.detectors.split(",") if d.strip()]
    if not detectors:
        raise SystemExit("--detectors names no detector")
    out = run(Path(args.data), Path(args.out), detectors, args.limit, args.video_frames, args.seed, log)
    print("\n".join(out["lines"]), flush=True)
    print(f"media and manifest.json, results.json in {args.out}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate")
    sub = parser.add_subparsers(dest="task", required=True)
    g = sub.add_parser("grading", help="cross-validate (and optionally refit) the answer grader")
    g.add_argument("--data", required=True, help="Mohler CSV (mohler_dataset_edited.csv)")
    g.add_argument("--folds", type=int, default=5)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--alpha", type=float, default=DEFAULT_ALPHA, help="ridge penalty on standardized features"
    )
    g.add_argument("--features", default="", help="comma list of feature names (default: the shipped set)")
    g.add_argument("--model", default=None, help="sentence model folder or name (default: packaged MiniLM)")
    g.add_argument("--cache-dir", default="data/cache", help="embedding cache folder")
    g.add_argument("--no-cache", action="store_true")
    g.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared 2-core box)"
    )
    g.add_argument(
        "--fit-out", default="", help="also fit on all answers and write the calibration JSON here"
    )
    f = sub.add_parser("face", help="face validity harness: labelled media, eye-contact agreement per detector")
    f.add_argument("--out", required=True, help="folder for the media, manifest.json and results.json")
    f.add_argument("--detectors", default="mediapipe,mediapipe-mesh+iris,opencv",
                   help="comma list, printed side by side (mediapipe-mesh+iris: the face_landmark + iris models)")
    f.add_argument("--limit", type=int, default=16, help="single-face photos used (sorted by name)")
    f.add_argument("--video-frames", type=int, default=3, help="frames taken from each video clip")
    f.add_argument("--seed", type=int, default=0, help="seed of the placements and warp angles")
    f.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"),
                   help="the shared test material (faces/, video/)")
    from pipeline import evaluate_star

    evaluate_star.add_parser(sub)
    evaluate_keypoints.add_parser(sub)
    args = parser.parse_args(argv)
    if args.task == "grading":
        return run_grading(args)
    if args.task == "face":
        return run_face(args)
    if args.task == "star":
        return evaluate_star.run(args)
    if args.task == "keypoints":
        return evaluate_keypoints.run_keypoints(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
