"""The Mohler 2011 short-answer data set: loading it, the grader's features for every answer,
scored with ``pipeline.agreement`` (pearson r, RMSE) against its human grades.

Shared by the offline CLI (``python -m pipeline.evaluate``) and re-scoring's Mohler effect on the
Research page, so neither imports the other.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

BAD_CELL = "#NAME?"  # spreadsheet formula errors in the edited Mohler CSV


def load_mohler(path: Path) -> list[dict[str, str]]:
    """The CSV's usable rows: question, reference and answer present, a numeric score_avg."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    keep = []
    for r in rows:
        texts = (r.get("question", ""), r.get("desired_answer", ""), r.get("student_answer", ""))
        if any(t.strip() in ("", BAD_CELL) for t in texts):
            continue
        try:
            float(r["score_avg"])
        except (KeyError, ValueError):
            continue
        keep.append(r)
    return keep


def grading_features(
    rows: list[dict[str, str]], model: str | None, cache_dir: Path | None,
    log: Callable[[str], object], threads: int | None = None, spans: bool = False
) -> tuple[np.ndarray, np.ndarray, str]:
    """All feature values (one row per answer, columns = every value the grader computes)."""
    # Imported here: loading the data and the agreement figures need no model code.
    from pipeline.encoder import SentenceEncoder
    from pipeline.grading import extract_features, texts_to_encode

    t0 = time.perf_counter()
    enc = SentenceEncoder(model, threads=threads)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"grading_{re.sub(r'[^A-Za-z0-9]+', '_', enc.model_id)[:60]}.npz"
        log(f"cache: {cache} ({enc.load_cache(cache)} vectors)")
    texts: dict[str, None] = {}
    for r in rows:
        texts.update(
            dict.fromkeys(
                texts_to_encode(r["question"], r["desired_answer"], None, r["student_answer"], spans=spans)
            )
        )
    before = enc.model_calls
    todo = list(texts)
    for i in range(0, len(todo), 4096):
        enc.encode(todo[i : i + 4096])
    if cache is not None and enc.model_calls > before:
        enc.save_cache(cache)
    log(f"encoded {len(todo)} texts in {time.perf_counter() - t0:.1f}s")
    feats = [
        extract_features(
            enc, r["question"], r["desired_answer"], None, r["student_answer"], spans=spans
        ).values
        for r in rows
    ]
    names = sorted(set().union(*feats))
    x = np.array([[f.get(n, 0.0) for n in names] for f in feats], dtype=np.float64)
    return x, np.array(names), enc.model_id
