"""Coordinate-wise trimmed mean (Yin et al. 2018, "Byzantine-Robust Distributed Learning")."""

from __future__ import annotations

import math

import numpy as np

from murmura.aggregate.base import AGGREGATORS, Aggregator, Matrix, Rule, Vector
from murmura.aggregate.median import check_weighted, sorted_blocks
from murmura.aggregate.weighted_order import weighted_trimmed_mean
from murmura.errors import AggregationError


def trimmed_count(n: int, beta: float) -> int:
    """Return how many values are cut from each side: ``floor(beta * n)``."""
    # The small slack keeps e.g. 0.29 * 100 = 28.999999999999996 at 29.
    return math.floor(beta * n + 1e-9)


def trimmed_mean(
    updates: Matrix, weights: Vector, beta: float = 0.1, weighted: bool = False
) -> Vector:
    """Return, per coordinate, the mean after dropping the ``floor(beta n)`` lowest and highest.

    Tolerates up to ``floor(beta n)`` Byzantine clients. ``weighted`` False: ``weights`` are
    ignored, as in the paper (a weight would let one client buy its way past the trimming);
    True: the example-weighted trimmed mean cutting the same share ``floor(beta n) / n`` of
    the weight from each tail (``weighted_order``), so equal weights give the same result.
    """
    check_beta(beta)
    n = updates.shape[0]
    check_trimmed_mean(n, beta=beta)
    k = trimmed_count(n, beta)
    if weighted:
        return weighted_trimmed_mean(updates, weights, k / n)
    out = np.empty(updates.shape[1], dtype=np.float32)
    for cols, block in sorted_blocks(updates):
        out[cols] = block[:, k : n - k].sum(axis=1) / np.float32(n - 2 * k)
    return out


def check_beta(beta: float) -> None:
    """Raise ``AggregationError`` unless ``0 <= beta < 0.5``."""
    if not 0.0 <= beta < 0.5:
        raise AggregationError(
            f"trimmed_mean: beta = {beta!r} is out of range; need 0 <= beta < 0.5"
        )


def check_trimmed_mean(n: int, *, beta: float, weighted: bool = False) -> None:
    """Raise ``AggregationError`` unless there is at least one client."""
    if n < 1:
        raise AggregationError(f"trimmed_mean needs n >= 1 client; got n = {n} (beta = {beta})")


@AGGREGATORS.register("trimmed_mean")
def _trimmed_mean_rule(beta: float = 0.1, weighted: bool = False) -> Aggregator:
    check_beta(beta)
    check_weighted("trimmed_mean", weighted)
    return Rule(
        "trimmed_mean",
        trimmed_mean,
        {"beta": beta, "weighted": weighted},
        precondition=check_trimmed_mean,
    )
