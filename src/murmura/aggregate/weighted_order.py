"""Example-weighted order statistics: the weighted coordinate median and trimmed mean.

The unweighted rules of Yin et al. 2018 count clients equally. Under quantity skew that
throws away what the large clients know: on W1 (Dirichlet 0.5) the clients a robust rule
sets aside are the large ones. The weighted versions put each client's example count on the
per-coordinate distribution: the weighted median is the point where half the weight lies on
either side (the classical weighted median, e.g. Pillutla et al. 2022 use the weighted
geometric median in RFA for the same reason), and the weighted trimmed mean cuts a share of
the *weight* from each tail (the weighted trimmed mean of robust statistics). With equal
weights both are exactly the unweighted rules. A Byzantine client now needs weight, not just
a seat, to move them: cap inflated counts with ``[strategy] max_weight_share``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

from murmura.aggregate.base import Matrix, Vector, normalized

F64 = NDArray[np.float64]
BLOCK = 8_192
"""Columns sorted at a time (as ``median.BLOCK``): memory stays at one block."""
TOL = 1e-9
"""Slack on the cumulative-weight comparisons, so equal weights hit ``1/2`` exactly."""


def sorted_weighted_blocks(updates: Matrix, weights: Vector) -> Iterator[tuple[slice, F64, F64]]:
    """``(columns, values, weights)``: each column's values sorted, weights carried along.

    Both arrays are ``(columns, n)`` float64; weights sum to one per row. Ties are broken by
    row index (a stable sort), which does not change any weighted order statistic.
    """
    w = normalized(weights)
    d = updates.shape[1]
    for start in range(0, d, BLOCK):
        cols = slice(start, min(start + BLOCK, d))
        block = np.asarray(updates[:, cols], dtype=np.float64).T
        order = np.argsort(block, axis=1, kind="stable")
        yield cols, np.take_along_axis(block, order, axis=1), w[order]


def weighted_median(updates: Matrix, weights: Vector) -> Vector:
    """Per coordinate, the mean of the lower and upper weighted medians.

    Lower: the smallest value with at least half the weight at or below it; upper: the
    smallest with more than half. They differ only when the weight splits exactly in two
    (equal weights, ``n`` even), and then their mean is the usual median's.
    """
    out = np.empty(updates.shape[1], dtype=np.float32)
    for cols, v, w in sorted_weighted_blocks(updates, weights):
        cum = np.cumsum(w, axis=1)
        lower = np.argmax(cum >= 0.5 - TOL, axis=1)
        upper = np.argmax(cum > 0.5 + TOL, axis=1)
        rows = np.arange(v.shape[0])
        out[cols] = 0.5 * (v[rows, lower] + v[rows, upper])
    return out


def weighted_trimmed_mean(updates: Matrix, weights: Vector, trim: float) -> Vector:
    """Per coordinate, the weighted mean of what is left after cutting weight ``trim`` per tail.

    A value straddling a cut keeps the part of its weight inside ``[trim, 1 - trim]``. With
    equal weights and ``trim = k / n`` this drops exactly the ``k`` lowest and highest values.
    """
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim = {trim!r} must be in [0, 0.5)")
    out = np.empty(updates.shape[1], dtype=np.float32)
    for cols, v, w in sorted_weighted_blocks(updates, weights):
        hi = np.cumsum(w, axis=1)
        lo = hi - w
        kept = np.clip(np.minimum(hi, 1.0 - trim) - np.maximum(lo, trim), 0.0, None)
        kept[kept < TOL] = 0.0
        out[cols] = (kept * v).sum(axis=1) / kept.sum(axis=1)
    return out
