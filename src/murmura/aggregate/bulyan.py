"""Bulyan (El Mhamdi et al. 2018, "The Hidden Vulnerability of Distributed Learning in Byzantium").

Krum applied repeatedly picks ``n - 2f`` updates; a coordinate-wise trimmed mean around
their median combines them. Needs ``n >= 4f + 3``.
"""

from __future__ import annotations

import numpy as np

from murmura.aggregate.base import AGGREGATORS, Aggregator, Matrix, Rule, Vector
from murmura.aggregate.distances import centred_gram, squared_distances
from murmura.aggregate.krum import Indices, check_f, krum_ranking
from murmura.aggregate.median import middle, sorted_blocks
from murmura.errors import AggregationError


def bulyan_select(updates: Matrix, f: int) -> Indices:
    """Return the ``n - 2f`` rows chosen by Krum applied repeatedly, in the order chosen.

    The pairwise distances are computed once; each round scores the remaining rows on their
    sub-matrix and removes the winner.
    """
    n = updates.shape[0]
    check_f("bulyan", f)
    check_bulyan(n, f=f)
    d2 = squared_distances(centred_gram(updates))
    remaining = np.arange(n)
    chosen = np.empty(n - 2 * f, dtype=np.intp)
    for step in range(n - 2 * f):
        sub = np.ix_(remaining, remaining)
        best = int(krum_ranking(d2[sub], f)[0])
        chosen[step] = remaining[best]
        remaining = np.delete(remaining, best)
    return chosen


def closest_to_median_mean(sorted_block: Matrix, beta: int) -> Vector:
    """Return, per row of a row-sorted block, the mean of the ``beta`` values closest to its median.

    The ``k = theta - beta`` values left out are the farthest from the median, taken from the two
    ends of the sorted row: the ``i``-th lowest goes iff it is farther than the
    ``(k + 1 - i)``-th highest (ties keep the low value). Both distances are monotone in ``i``,
    so the kept values are the window of ``beta`` that starts after the dropped low ones.
    Sums run in float64. A total less the dropped values is exact enough unless a dropped
    value dwarfs the kept ones (1e30 against 1 leaves 0); such rows sum their window directly.
    """
    theta = sorted_block.shape[1]
    k = theta - beta
    med = middle(sorted_block)[:, None]
    lows, highs = sorted_block[:, :k], sorted_block[:, theta - k :]
    drop_low = (med - lows) > (highs - med)
    if 2 * k >= theta:
        # No column is in every window (small n): mask the window.
        start = drop_low.sum(axis=1)[:, None]
        cols = np.arange(theta)
        inside = (cols >= start) & (cols < start + beta)
        kept = np.where(inside, sorted_block, 0).sum(axis=1, dtype=np.float64)
    else:
        dropped = np.where(drop_low, lows, highs).sum(axis=1, dtype=np.float64)
        kept = sorted_block.sum(axis=1, dtype=np.float64) - dropped
        # Every window holds columns k .. theta - k - 1; rows whose extremes exceed 2^20 times
        # those are recomputed part by part (middle, low values kept, high values kept).
        inner = np.maximum(np.abs(sorted_block[:, k]), np.abs(sorted_block[:, theta - k - 1]))
        outer = np.maximum(np.abs(sorted_block[:, 0]), np.abs(sorted_block[:, -1]))
        risky = np.flatnonzero(outer > 2.0**20 * inner)
        if len(risky):
            part, low = sorted_block[risky], drop_low[risky]
            kept[risky] = (
                part[:, k : theta - k].sum(axis=1, dtype=np.float64)
                + np.where(low, 0, lows[risky]).sum(axis=1, dtype=np.float64)
                + np.where(low, highs[risky], 0).sum(axis=1, dtype=np.float64)
            )
    out: Vector = (kept / beta).astype(np.float32)
    return out


def bulyan(updates: Matrix, weights: Vector, f: int = 1) -> Vector:
    """Return Bulyan's aggregate; ``weights`` are ignored, as in the paper.

    Krum-select ``n - 2f`` rows, then per coordinate average the ``n - 4f`` selected values
    closest to their median.
    """
    chosen = np.sort(bulyan_select(updates, f))
    beta = len(chosen) - 2 * f
    out = np.empty(updates.shape[1], dtype=np.float32)
    for cols, block in sorted_blocks(updates, chosen):
        out[cols] = closest_to_median_mean(block, beta)
    return out


def check_bulyan(n: int, *, f: int) -> None:
    """Raise ``AggregationError`` unless ``n >= 4f + 3``."""
    if n < 4 * f + 3:
        raise AggregationError(
            f"bulyan: f = {f} is too large for n = {n} clients; it needs n >= 4f + 3 = "
            f"{4 * f + 3} (at most f = {max((n - 3) // 4, 0)} for n = {n})"
        )


@AGGREGATORS.register("bulyan")
def _bulyan_rule(f: int = 1) -> Aggregator:
    check_f("bulyan", f)
    return Rule("bulyan", bulyan, {"f": f}, precondition=check_bulyan)
