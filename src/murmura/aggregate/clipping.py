"""Clipping rules: centered clipping and norm bounding of client updates.

Centered clipping: Karimireddy et al. 2021, "Learning from History for Byzantine Robust
Optimization". Norm bounding: Sun et al. 2019, "Can You Really Backdoor Federated Learning?".
"""

from __future__ import annotations

import numpy as np

from murmura.aggregate.base import AGGREGATORS, Aggregator, Matrix, Rule, Vector, normalized
from murmura.aggregate.distances import combine, distances_to, row_squared_norms
from murmura.aggregate.median import coordinate_median
from murmura.errors import AggregationError


def centered_clipping(
    updates: Matrix,
    weights: Vector,
    tau: float = 1.0,
    iters: int = 3,
    center: Vector | None = None,
) -> Vector:
    """Return ``v`` after ``iters`` steps of ``v += sum_i w_i clip_tau(x_i - v)`` (CC, 2021).

    The paper centres on the previous round's aggregate, which a stateful strategy can pass
    as ``center``; without one, the rule starts from the coordinate-wise median, a robust
    anchor that needs no state. ``tau`` is in the units of the updates' norms.
    """
    check_positive("centered_clipping", "tau", tau)
    check_iters(iters)
    alpha = normalized(weights)
    sq_norms = row_squared_norms(updates)
    v = coordinate_median(updates, weights) if center is None else np.array(center, np.float32)
    for _ in range(iters):
        # min(1, tau / dist) written so that a zero distance needs no special case.
        coef = alpha * tau / np.maximum(distances_to(updates, sq_norms, v), tau)
        step = combine(coef, updates)
        v = v + step - np.float32(coef.sum()) * v
    return np.asarray(v, dtype=np.float32)


def norm_bounding(updates: Matrix, weights: Vector, bound: float = 1.0) -> Vector:
    """Return the weighted mean of the updates, each first scaled down to L2 norm <= ``bound``.

    The result's norm is at most ``bound`` (a convex combination of vectors inside the ball).
    """
    check_positive("norm_bounding", "bound", bound)
    norms = np.sqrt(row_squared_norms(updates))
    coef = normalized(weights) * bound / np.maximum(norms, bound)
    return combine(coef, updates)


def check_positive(rule: str, name: str, value: float) -> None:
    """Raise ``AggregationError`` unless ``value`` is a finite number > 0."""
    if not (np.isfinite(value) and value > 0):
        raise AggregationError(f"{rule}: {name} = {value!r} must be a finite number > 0")


def check_iters(iters: int) -> None:
    """Raise ``AggregationError`` unless ``iters`` is an integer >= 1."""
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise AggregationError(f"centered_clipping: iters = {iters!r} must be an integer >= 1")


@AGGREGATORS.register("centered_clipping")
def _centered_clipping_rule(tau: float = 1.0, iters: int = 3) -> Aggregator:
    check_positive("centered_clipping", "tau", tau)
    check_iters(iters)
    return Rule("centered_clipping", centered_clipping, {"tau": tau, "iters": iters})


@AGGREGATORS.register("norm_bounding")
def _norm_bounding_rule(bound: float = 1.0) -> Aggregator:
    check_positive("norm_bounding", "bound", bound)
    return Rule("norm_bounding", norm_bounding, {"bound": bound})
