"""Array helpers for display: smoothing inside runs, bucket means, holes and gaps, fill polygons,
and the None-for-gap arrays Plotly is given. Pure numpy; stored documents are never modified."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Frames further apart than this (or 3x the usual interval) mean video is missing there.
MIN_HOLE_SECONDS = 1.0


def smooth_segments(values: np.ndarray, window: int, breaks: np.ndarray | None = None) -> np.ndarray:
    """Centred moving average inside each run of valid (non-NaN) rows; never across a gap.

    ``values`` is (n,) or (n, k), rows valid when their first column is not NaN;
    ``breaks[i]`` True forces a new run at row i (a hole in the sampling).
    """
    y = np.asarray(values, dtype=float)
    flat = y.ndim == 1
    y2 = y[:, None] if flat else y
    n = len(y2)
    valid = ~np.isnan(y2[:, 0]) if n else np.zeros(0, bool)
    if window <= 1 or n == 0 or not valid.any():
        out = y2.copy()
    else:
        brk = np.zeros(n, bool) if breaks is None else np.asarray(breaks, bool)
        prev_valid = np.r_[False, valid[:-1]]
        next_valid = np.r_[valid[1:], False]
        start = valid & (~prev_valid | brk)
        end = valid & (~next_valid | np.r_[brk[1:], True])
        starts, ends = np.flatnonzero(start), np.flatnonzero(end)
        seg = np.clip(np.cumsum(start) - 1, 0, None)
        i = np.arange(n)
        lo = np.maximum(i - (window - 1) // 2, starts[seg])
        hi = np.minimum(i + window // 2, ends[seg])
        hi = np.where(valid, hi, lo)  # invalid rows: any non-empty window, masked below
        csum = np.vstack([np.zeros((1, y2.shape[1])), np.cumsum(np.where(valid[:, None], y2, 0.0), axis=0)])
        out = (csum[hi + 1] - csum[lo]) / (hi - lo + 1)[:, None]
        out[~valid] = np.nan
    return out[:, 0] if flat else out


def bucket_mean(
    x: np.ndarray, values: np.ndarray, max_points: int, min_valid_fraction: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Display-only downsampling: the mean of each of ``max_points`` equal time buckets.

    A bucket's value is NaN (a gap) when fewer than ``min_valid_fraction`` of its samples
    (and at least one) are valid, so a gap wider than a bucket stays a gap. Inputs are
    returned as copies, untouched, when they already fit.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(values, dtype=float)
    flat = y.ndim == 1
    y2 = y[:, None] if flat else y
    n = len(x)
    if n <= max_points or max_points < 2 or x[-1] <= x[0]:
        return x.copy(), y.copy()
    idx = np.minimum(((x - x[0]) / (x[-1] - x[0]) * max_points).astype(np.int64), max_points - 1)
    counts = np.bincount(idx, minlength=max_points).astype(float)
    used = counts > 0  # empty buckets (sparse stretches) are dropped, not turned into gaps
    xb = np.bincount(idx, weights=x, minlength=max_points)[used] / counts[used]
    out = np.empty((int(used.sum()), y2.shape[1]))
    for j in range(y2.shape[1]):
        ok = ~np.isnan(y2[:, j])
        nvalid = np.bincount(idx, weights=ok, minlength=max_points)[used]
        sums = np.bincount(idx, weights=np.where(ok, y2[:, j], 0.0), minlength=max_points)[used]
        good = (nvalid > 0) & (nvalid >= min_valid_fraction * counts[used])
        out[:, j] = np.where(good, sums / np.maximum(nvalid, 1), np.nan)
    return xb, (out[:, 0] if flat else out)


def find_holes(x: np.ndarray) -> np.ndarray:
    """(k, 2) intervals between consecutive samples spaced far more than usual."""
    if len(x) < 2:
        return np.zeros((0, 2))
    dt = np.diff(x)
    limit = max(MIN_HOLE_SECONDS, 3.0 * float(np.median(dt)))
    i = np.flatnonzero(dt > limit)
    return np.column_stack([x[i], x[i + 1]])


def insert_gaps(x: np.ndarray, y: np.ndarray, holes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A NaN row in the middle of each hole, so lines break where nothing was sampled."""
    if not len(holes) or not len(x):
        return x, y
    mids = holes.mean(axis=1)
    pos = np.searchsorted(x, mids)
    gap = np.full((len(mids),) + y.shape[1:], np.nan)
    return np.insert(x, pos, mids), np.insert(y, pos, gap, axis=0)


def runs(mask: np.ndarray) -> np.ndarray:
    """(k, 2) inclusive index ranges of consecutive True values."""
    d = np.diff(np.r_[0, np.asarray(mask, np.int8), 0])
    return np.column_stack([np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1])


def band_polygons(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, pad: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed polygons (fill='toself', one per run of valid points, None between them).

    Plotly's tonexty/stackgroup fills bridge gaps; 'toself' honours them. Each run is
    widened by half a sample (``pad``) so an isolated frame is still visible.
    """
    px: list[Any] = []
    py: list[Any] = []
    for i0, i1 in runs(~np.isnan(upper)):
        xs = np.r_[x[i0] - pad, x[i0 : i1 + 1], x[i1] + pad]
        up = np.r_[upper[i0], upper[i0 : i1 + 1], upper[i1]]
        lo = np.r_[lower[i0], lower[i0 : i1 + 1], lower[i1]]
        px += pylist(np.r_[xs, xs[::-1]]) + [None]
        py += pylist(np.r_[up, lo[::-1]], 4) + [None]
    return gappy(px), gappy(py)


def intervals_polygon(intervals: Sequence[tuple[float, float]], y0: float, y1: float) -> tuple[np.ndarray, np.ndarray]:
    px: list[Any] = []
    py: list[Any] = []
    for a, b in intervals:
        px += [round(a, 3), round(a, 3), round(b, 3), round(b, 3), None]
        py += [y0, y1, y1, y0, None]
    return gappy(px), gappy(py)


def merge_intervals(intervals: list[tuple[float, float]], tolerance: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a - out[-1][1] <= tolerance:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def pylist(a: np.ndarray, digits: int = 3) -> list[Any]:
    """Rounded floats, None for NaN (a gap, never a number)."""
    return [None if v != v else v for v in np.round(np.asarray(a, dtype=float), digits).tolist()]


def gappy(values: np.ndarray | list[Any], digits: int = 3) -> np.ndarray:
    """A display array with None at gaps, as an object array: plotly validates it ~10x faster
    than a list (no per-element walk) and still writes None (JSON null) for every gap."""
    items = values if isinstance(values, list) else pylist(values, digits)
    return np.array(items, dtype=object)


def median_step(x: np.ndarray) -> float:
    return float(np.median(np.diff(x))) if len(x) > 1 else 0.1
