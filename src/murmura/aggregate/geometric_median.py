"""Smoothed Weiszfeld geometric median (RFA: Pillutla et al. 2022, "Robust Aggregation for FL")."""

from __future__ import annotations

import numpy as np

from murmura.aggregate.base import AGGREGATORS, Aggregator, Matrix, Rule, Vector, normalized
from murmura.aggregate.distances import Float64, centred_gram, combine
from murmura.errors import AggregationError


def weiszfeld_coefficients(
    g: Float64, alpha: Float64, eps: float, max_iter: int, ftol: float
) -> Float64:
    """Return ``c`` with ``sum_i c_i x_i`` the smoothed geometric median, given the Gram matrix.

    Every Weiszfeld iterate is a convex combination ``X.T @ c`` of the rows, so its distances
    to the rows follow from ``g`` alone: ``||x_i - X.T c||^2 = g_ii - 2 (g c)_i + c.g.c``.
    Iterations then cost ``O(n^2)``, not a pass over ``(n, d)``. Since ``c`` sums to one, ``g``
    may be the Gram matrix of the rows less any common point (``centred_gram``).
    """
    sq = np.diag(g)
    c = alpha.copy()
    previous = np.inf
    for _ in range(max_iter):
        gc = g @ c
        dist = np.sqrt(np.maximum(sq - 2.0 * gc + c @ gc, 0.0))
        objective = float(alpha @ dist)
        if previous - objective <= ftol * objective:
            break
        previous = objective
        inverse = alpha / np.maximum(dist, eps)
        c = inverse / inverse.sum()
    return c


def geometric_median(
    updates: Matrix,
    weights: Vector,
    eps: float = 1e-6,
    max_iter: int = 1000,
    ftol: float = 1e-9,
) -> Vector:
    """Return the point minimising ``sum_i w_i max(eps, ||x_i - z||)``, started at the mean.

    ``eps`` smooths the distance so a point sitting on a row does not divide by zero; the
    loop stops when the objective improves by less than ``ftol`` (relative) or after
    ``max_iter`` iterations.
    """
    check_params(eps, max_iter, ftol)
    c = weiszfeld_coefficients(centred_gram(updates), normalized(weights), eps, max_iter, ftol)
    return combine(c, updates)


def check_params(eps: float, max_iter: int, ftol: float) -> None:
    """Raise ``AggregationError`` unless ``eps > 0``, ``max_iter >= 1`` and ``ftol >= 0``."""
    if not eps > 0:
        raise AggregationError(f"geometric_median: eps = {eps!r} must be > 0")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise AggregationError(f"geometric_median: max_iter = {max_iter!r} must be an integer >= 1")
    if not ftol >= 0:
        raise AggregationError(f"geometric_median: ftol = {ftol!r} must be >= 0")


@AGGREGATORS.register("geometric_median")
def _geometric_median_rule(
    eps: float = 1e-6, max_iter: int = 1000, ftol: float = 1e-9
) -> Aggregator:
    check_params(eps, max_iter, ftol)
    params = {"eps": eps, "max_iter": max_iter, "ftol": ftol}
    return Rule("geometric_median", geometric_median, params)
