"""Agreement figures between two series (predicted vs human grades, a metric vs the grade):
Pearson r (scipy) and RMSE, shared by evaluation, re-scoring and the calibration view."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import pearsonr


def pearson(a: ArrayLike, b: ArrayLike, min_n: int = 2) -> float:
    """Pearson r of ``a`` against ``b``; NaN when fewer than ``min_n`` pairs or either side is constant."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) < max(2, min_n) or np.std(x) == 0 or np.std(y) == 0:
        return math.nan
    return float(pearsonr(x, y).statistic)


def rmse(a: ArrayLike, b: ArrayLike) -> float:
    """Root mean squared error, on the scale of its inputs (0-5 for Mohler grades)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.sqrt(np.mean((x - y) ** 2)))
