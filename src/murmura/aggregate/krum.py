"""Krum and Multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries")."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from murmura.aggregate.base import AGGREGATORS, Aggregator, Matrix, Rule, Vector, normalized
from murmura.aggregate.distances import Float64, centred_gram, combine, squared_distances
from murmura.errors import AggregationError

Indices = NDArray[np.intp]


def krum_scores(d2: Float64, f: int) -> Float64:
    """Return each row's Krum score: the sum of squared distances to its ``n - f - 2`` nearest.

    The neighbour count is floored at one so Bulyan can score its last, small candidate sets.
    The nearest distances are summed in ascending order, so a score does not depend on the
    order of the other rows.
    """
    n = d2.shape[0]
    k = min(max(n - f - 2, 1), n - 1)
    if k < 1:
        return np.zeros(n)
    others = d2.copy()
    np.fill_diagonal(others, np.inf)
    nearest = np.sort(np.partition(others, k - 1, axis=1)[:, :k], axis=1)
    out: Float64 = nearest.sum(axis=1)
    return out


def krum_ranking(d2: Float64, f: int) -> Indices:
    """Return the rows ordered by Krum score, best first.

    Scores are compared exactly. Equal scores (with one neighbour counted, two mutual nearest
    neighbours always tie) are ordered by each row's distances to the others, nearest first,
    compared in turn (the row whose next neighbours are nearer wins), then by index. Client
    order alone would make the result depend on arrival order; a tolerance relative to the
    largest score, a norm or a sum of all distances would let one huge or zero row decide.
    """
    scores = krum_scores(d2, f)
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    if not (ranked[1:] == ranked[:-1]).any():
        return order
    neighbours = np.sort(d2, axis=1)
    # np.lexsort sorts by its last key first and is stable, so equal rows keep index order.
    return np.lexsort((*neighbours.T[::-1], scores))


def krum_select(updates: Matrix, f: int, m: int = 1) -> Indices:
    """Return the indices of the ``m`` rows with the lowest Krum scores, best first."""
    check_f("krum", f)
    check_krum(updates.shape[0], f=f, m=m)
    return krum_ranking(squared_distances(centred_gram(updates)), f)[:m]


def krum(updates: Matrix, weights: Vector, f: int = 1) -> Vector:
    """Return the single update closest to its ``n - f - 2`` neighbours; ``weights`` are ignored."""
    best = int(krum_select(updates, f)[0])
    return np.array(updates[best], dtype=np.float32)


def multi_krum(updates: Matrix, weights: Vector, f: int = 1, m: int | None = None) -> Vector:
    """Return the weighted mean of the ``m`` best-scored updates (default ``m = n - f``)."""
    n = updates.shape[0]
    chosen = krum_select(updates, f, n - f if m is None else m)
    coef = np.zeros(n)
    coef[chosen] = normalized(np.asarray(weights)[chosen])
    return combine(coef, updates)


def check_f(rule: str, f: int) -> None:
    """Raise ``AggregationError`` unless ``f`` is a non-negative integer."""
    if isinstance(f, bool) or not isinstance(f, int | np.integer) or f < 0:
        raise AggregationError(f"{rule}: f = {f!r} must be an integer >= 0")


def check_krum(n: int, *, f: int, m: int | None = 1) -> None:
    """Raise ``AggregationError`` unless ``n >= 2f + 3`` and ``1 <= m <= n``."""
    rule = "krum" if m == 1 else "multi_krum"
    if n < 2 * f + 3:
        raise AggregationError(
            f"{rule}: f = {f} is too large for n = {n} clients; it needs n >= 2f + 3 = {2 * f + 3}"
            f" (at most f = {max((n - 3) // 2, 0)} for n = {n})"
        )
    if m is not None and not 1 <= m <= n:
        raise AggregationError(
            f"{rule}: m = {m} selected updates is out of range; need 1 <= m <= n = {n}"
        )


def _check_m(m: int | None) -> None:
    if m is not None and (isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 1):
        raise AggregationError(f"multi_krum: m = {m!r} must be an integer >= 1 (or None for n - f)")


@AGGREGATORS.register("krum")
def _krum_rule(f: int = 1) -> Aggregator:
    check_f("krum", f)
    return Rule("krum", krum, {"f": f}, precondition=check_krum)


@AGGREGATORS.register("multi_krum")
def _multi_krum_rule(f: int = 1, m: int | None = None) -> Aggregator:
    check_f("multi_krum", f)
    _check_m(m)
    return Rule("multi_krum", multi_krum, {"f": f, "m": m}, precondition=check_krum)
