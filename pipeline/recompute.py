"""Pure re-scoring stages shared by the Research page's re-score (pipeline.rescore) and the sidebar
what-if (pipeline.whatif): which speech metrics a threshold change alters and their new values, a
session's grade from its answers, and the grader's agreement with the Mohler 2011 human grades."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.agreement import pearson, rmse
from pipeline.grading_features import GradeFeatures
from pipeline.grading_score import GradeOptions, band_for, score
from pipeline.mohler import grading_features, load_mohler
from pipeline.settings import Settings
from pipeline.speech_metrics import SpeechMetricsOptions, filler_and_pause_metrics, pace_band

log = logging.getLogger(__name__)

SPEECH_FILLER_FIELDS = ("fillers", "filler_counts", "filler_count", "fillers_per_minute")
SPEECH_PAUSE_FIELDS = ("pauses", "longest_pause_s")


# --------------------------------------------------------------------------- speech metrics


def num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def filler_key(words: Iterable[Any]) -> frozenset[str]:
    return frozenset(" ".join(str(w).lower().split()) for w in words or ())


@dataclass(frozen=True)
class SpeechPlan:
    fillers: bool
    pauses: bool
    pace: bool

    @property
    def words(self) -> bool:
        return self.fillers or self.pauses


def speech_plan(old: Mapping[str, Any] | None, new: Settings) -> SpeechPlan:
    """What a change from the stored metrics' thresholds (``old``) to ``new`` requires."""
    old = old or {}

    def differs(name: str) -> bool:
        value = old.get(name)
        if value is None:
            return True
        if name == "filler_words":
            return filler_key(value) != filler_key(new.speech.filler_words)
        return num(value) != float(new.value(name))

    return SpeechPlan(
        fillers=differs("filler_words"),
        pauses=differs("pause_seconds"),
        pace=differs("pace_low_wpm") or differs("pace_high_wpm"),
    )


def speech_fields(
    doc: Mapping[str, Any], plan: SpeechPlan, options: SpeechMetricsOptions, counts: dict[str, int]
) -> dict[str, Any]:
    """``metrics.*`` fields that the changed thresholds alter (empty when none)."""
    metrics = doc.get("metrics") or {}
    if not metrics or not metrics.get("has_speech", True):
        return {}
    out: dict[str, Any] = {}
    if plan.pace:
        wpm = num(metrics.get("wpm"))
        out["metrics.pace_band"] = pace_band(wpm, options.pace_low_wpm, options.pace_high_wpm)
        counts["pace_band"] += 1
    words = doc.get("words")
    if plan.words and words:
        try:
            m = filler_and_pause_metrics(words, options, fillers=plan.fillers, pauses=plan.pauses)
        except (KeyError, TypeError, ValueError) as exc:  # a malformed stored word: keep what is stored
            log.warning("speech metrics of answer %s not recomputed: %s", doc.get("_id"), exc)
            counts["errors"] += 1
            return out
        if plan.fillers:
            out.update({f"metrics.{k}": m.get(k) for k in SPEECH_FILLER_FIELDS})
            counts["fillers"] += 1
        if plan.pauses:
            out.update({f"metrics.{k}": m.get(k) for k in SPEECH_PAUSE_FIELDS})
            counts["pauses"] += 1
    return out




def session_grade(
    rows: Sequence[tuple[float | None, Sequence[str]]], cutoffs: Sequence[float]
) -> tuple[float | None, str | None, list[str]]:
    """A session's (grade, band, flags) from its answers' (score, flags), as pipeline.interview.summarise:
    the mean of the graded answers, its band under ``cutoffs``, the union of the flags."""
    scores = [v for v, _ in rows if v is not None]
    mean = sum(scores) / len(scores) if scores else None
    band = band_for(mean, cutoffs) if mean is not None else None
    return mean, band, sorted({f for _, fl in rows for f in fl})



# --------------------------------------------------------------------------- Mohler effect


@dataclass(frozen=True)
class MohlerEffect:
    pearson_r: float
    rmse: float  # on the 0-5 scale of the human grades
    n: int
    off_topic: int  # answers the off-topic rule capped


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def mohler_cache_path(settings: Settings, data_path: Path | str, cache_dir: Path | str | None = None) -> Path:
    model = re.sub(r"[^A-Za-z0-9]+", "_", str(settings.grading.model or "packaged"))[-40:]
    folder = Path(cache_dir) if cache_dir is not None else settings.storage.data_dir / "cache"
    return folder / f"mohler_features_{file_sha256(Path(data_path))[:16]}_{model}.json"


def write_mohler_cache(path: Path, names: Sequence[str], x: np.ndarray, y: np.ndarray, data_sha256: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({
        "data_sha256": data_sha256, "names": list(names),
        "x": np.round(np.asarray(x, dtype=np.float64), 6).tolist(), "y": [float(v) for v in y],
    }), encoding="utf-8")
    tmp.replace(path)


@lru_cache(maxsize=4)
def _read_mohler_cache(path: str, mtime_ns: int) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return tuple(data["names"]), np.asarray(data["x"], dtype=np.float64), np.asarray(data["y"], dtype=np.float64)


def mohler_features(
    settings: Settings, data_path: Path | str, cache_dir: Path | str | None = None, build: bool = True
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray] | None:
    """(feature names, values per answer, human grades 0-5); None when not cached and not ``build``."""
    path = mohler_cache_path(settings, data_path, cache_dir)
    if not path.exists():
        if not build:
            return None
        rows = load_mohler(Path(data_path))
        x, names, _ = grading_features(
            rows, settings.grading.model, path.parent, log.info, threads=settings.grading.threads
        )
        y = np.array([float(r["score_avg"]) for r in rows])
        write_mohler_cache(path, [str(n) for n in names], x, y, file_sha256(Path(data_path)))
    return _read_mohler_cache(str(path), path.stat().st_mtime_ns)


def mohler_effect(
    settings: Settings, data_path: Path | str, cache_dir: Path | str | None = None, build: bool = True
) -> MohlerEffect | None:
    """Pearson r / RMSE of ``score()`` under ``settings`` against the human grades (no key points,
    as in the data; note the shipped calibration was fitted on these answers, so this is an
    in-sample figure: use it to compare threshold sets, not as the grader's accuracy)."""
    loaded = mohler_features(settings, data_path, cache_dir, build)
    if loaded is None:
        return None
    names, x, y = loaded
    options = GradeOptions.from_settings(settings)
    log_words = names.index("log_words") if "log_words" in names else None
    pred = np.empty(len(y))
    off = 0
    for i, row in enumerate(x):
        values = dict(zip(names, row.tolist(), strict=True))
        n_words = round(math.expm1(row[log_words])) if log_words is not None else 0
        g = score(GradeFeatures(False, n_words, values, [], "none"), options)
        pred[i] = 5.0 * (g.score or 0.0)
        off += "off_topic" in g.flags
    return MohlerEffect(pearson_r=pearson(pred, y), rmse=rmse(pred, y), n=len(y), off_topic=off)
