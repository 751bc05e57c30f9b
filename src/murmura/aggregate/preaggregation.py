"""Pre-aggregation: maps on the ``(n, d)`` update matrix applied before any aggregation rule.

Robust rules lose accuracy on heterogeneous (non-IID) clients because honest updates are far
apart; a pre-aggregation step makes them closer before the rule runs, and composes with every
rule of ``murmura.aggregate``:

- NNM, nearest-neighbour mixing: Allouah et al. 2023, "Fixing by Mixing: A Recipe for Optimal
  Byzantine ML under Heterogeneity";
- bucketing: Karimireddy, He & Jaggi 2022, "Byzantine-Robust Learning on Heterogeneous
  Datasets via Bucketing";
- ARC, adaptive robust clipping: Allouah et al. 2024, "The Vital Role of Gradient Clipping in
  Byzantine-Resilient Distributed Learning".

Each is a pure function ``(updates, weights, **params) -> (updates', weights')``. The assumed
Byzantine share is a ``fraction`` of the rows (``f = floor(fraction * n)``), so one setting fits
a star cohort, every tree edge and every P2P neighbourhood, whatever their sizes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from murmura.aggregate.base import (
    Aggregator,
    ClientAware,
    Matrix,
    Vector,
    make_aggregator,
)
from murmura.aggregate.distances import (
    centred_gram,
    one_blas_thread,
    row_squared_norms,
    squared_distances,
)
from murmura.errors import AggregationError
from murmura.registry import Registry

PreFn = Callable[..., tuple[Matrix, Vector]]
Indices = NDArray[np.intp]


def byzantine_count(n: int, fraction: float) -> int:
    """``f = floor(fraction * n)``: the Byzantine rows assumed among ``n``."""
    return int(math.floor(fraction * n + 1e-9))


def canonical_ranks(updates: Matrix, weights: Vector) -> Indices:
    """Each row's rank in an order fixed by its content (row bytes and weight), not its position.

    Breaks ties between equidistant rows and orders rows for bucketing, so that the output
    does not depend on arrival order; rows that share a rank are identical with equal weights.
    """
    w = np.asarray(weights, dtype=np.float32)
    keys = [
        hashlib.blake2b(
            np.ascontiguousarray(row).tobytes() + w[i].tobytes(), digest_size=16
        ).digest()
        for i, row in enumerate(np.asarray(updates, dtype=np.float32))
    ]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    ranks = np.empty(len(keys), dtype=np.intp)
    ranks[order] = np.arange(len(keys))
    return ranks


def nnm(
    updates: Matrix, weights: Vector, fraction: float = 0.2, weighted: bool = False
) -> tuple[Matrix, Vector]:
    """Replace each row by the weighted mean of its ``n - f`` nearest rows (itself included).

    With ``f = 0`` every row becomes the weighted mean, so any rule then returns it exactly.
    Weights are kept: row ``i`` still speaks for client ``i``. ``weighted``: the neighbourhood
    is the nearest ``(n - f) / n`` of the total *weight* (``weighted_neighbours``), not the
    nearest ``n - f`` rows.
    """
    check_fraction("nnm", fraction)
    n = updates.shape[0]
    k = n - byzantine_count(n, fraction)
    d2 = squared_distances(centred_gram(updates))
    ranks = canonical_ranks(updates, weights)
    w = np.asarray(weights, dtype=np.float64)
    coef = np.zeros((n, n))
    for i in range(n):
        order = np.lexsort((ranks, d2[i]))
        if weighted:
            coef[i, order] = shares(weighted_neighbours(w[order], k / n))
        else:
            coef[i, order[:k]] = shares(w[order[:k]])
    return mix(coef, updates), np.asarray(weights, dtype=np.float32)


def weighted_neighbours(w_sorted: NDArray[np.float64], share: float) -> NDArray[np.float64]:
    """The weight each row (nearest first) puts in a neighbourhood holding ``share`` of the total.

    A client with weight ``w`` counts as ``w`` unit rows at its place, so under quantity skew a
    large client far from the many small ones is not left out of every neighbourhood; the row
    crossing the boundary enters with the part of its weight that fits. With equal weights and
    ``share = (n - f) / n`` this is exactly the ``n - f`` nearest rows.
    """
    total = w_sorted.sum()
    if not total > 0:
        out = np.zeros(len(w_sorted))
        out[: max(1, round(share * len(w_sorted)))] = 1.0
        return out
    before = np.cumsum(w_sorted) - w_sorted
    room = share * total - before
    kept: NDArray[np.float64] = np.clip(np.minimum(w_sorted, room), 0.0, None)
    kept[kept < 1e-9 * total] = 0.0
    return kept


def shares(w: NDArray[np.float64]) -> NDArray[np.float64]:
    """``w`` scaled to sum to one; equal shares when it sums to zero."""
    total = w.sum()
    out: NDArray[np.float64] = w / total if total > 0 else np.full(len(w), 1.0 / len(w))
    return out


def mix(coef: NDArray[np.float64], updates: Matrix) -> Matrix:
    """``coef @ updates`` as float32, in one BLAS product (no float64 copy of the rows)."""
    with one_blas_thread():
        return np.asarray(coef.astype(np.float32) @ updates, dtype=np.float32)


def bucketing(updates: Matrix, weights: Vector, s: int = 2, seed: int = 0) -> tuple[Matrix, Vector]:
    """Average random buckets of ``s`` rows; a bucket weighs the sum of its members' weights.

    The shuffle is drawn from ``seed`` and a digest of the rows, over the rows in their content
    order: it is fresh each round, the same for the same inputs, and independent of arrival
    order. The weighted mean of the buckets equals the weighted mean of the rows exactly.
    """
    check_bucket_size(s)
    n = updates.shape[0]
    ranks = canonical_ranks(updates, weights)
    by_content = np.argsort(ranks, kind="stable")
    digest = hashlib.blake2b(digest_size=8)
    for i in by_content:
        digest.update(np.ascontiguousarray(updates[i]).tobytes())
    rng = np.random.default_rng([seed, int.from_bytes(digest.digest(), "little")])
    order = by_content[rng.permutation(n)]
    w = np.asarray(weights, dtype=np.float64)
    buckets = [order[lo : lo + s] for lo in range(0, n, s)]
    coef = np.zeros((len(buckets), n))
    for b, members in enumerate(buckets):
        coef[b, members] = shares(w[members])
    out_w = np.asarray([w[members].sum() for members in buckets], dtype=np.float32)
    return mix(coef, updates), out_w


def arc(updates: Matrix, weights: Vector, fraction: float = 0.2) -> tuple[Matrix, Vector]:
    """Clip every row to the ``(k+1)``-th largest norm, ``k = floor(2 (f/n) (n - f))``.

    The ``k`` largest rows are scaled down to that norm, the others pass unchanged.
    """
    check_fraction("arc", fraction)
    n = updates.shape[0]
    f = byzantine_count(n, fraction)
    k = int(math.floor(2 * f * (n - f) / n + 1e-9))
    norms = np.sqrt(row_squared_norms(updates))
    if k == 0 or k >= n:
        return np.array(updates, dtype=np.float32), np.asarray(weights, dtype=np.float32)
    bound = np.sort(norms)[::-1][k]
    scale = np.ones(n)
    big = norms > bound
    scale[big] = bound / norms[big]
    clipped = np.asarray(updates, dtype=np.float32) * scale.astype(np.float32)[:, None]
    return clipped, np.asarray(weights, dtype=np.float32)


def check_fraction(name: str, fraction: float) -> None:
    """Raise ``AggregationError`` unless ``0 <= fraction < 0.5``."""
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not (0 <= fraction < 0.5)
    ):
        raise AggregationError(
            f"{name}: fraction = {fraction!r} (the assumed Byzantine share) must be in [0, 0.5)"
        )


def check_bucket_size(s: int) -> None:
    """Raise ``AggregationError`` unless the bucket size is an integer >= 1."""
    if isinstance(s, bool) or not isinstance(s, int) or s < 1:
        raise AggregationError(f"bucketing: s = {s!r} (the bucket size) must be an integer >= 1")


@dataclass(frozen=True, slots=True)
class PreAggregation:
    """A pre-aggregation function bound to its parameters."""

    name: str
    fn: PreFn
    params: Mapping[str, Any] = field(default_factory=dict)
    bucket: int = 1
    """Rows per output row: the rule sees ``ceil(n / bucket)`` rows."""
    mixes: str | None = None
    """What each output row averages, if it averages several clients' rows (NNM, bucketing);
    None: row ``i`` is still client ``i``'s own update, only rescaled (ARC)."""

    def __call__(self, updates: Matrix, weights: Vector) -> tuple[Matrix, Vector]:
        """The transformed rows and their weights."""
        return self.fn(updates, weights, **self.params)

    def rows_out(self, n: int) -> int:
        """How many rows the rule gets from ``n``."""
        return -(-n // self.bucket)


PRE_AGGREGATIONS: Registry[Callable[..., PreAggregation]] = Registry("pre-aggregation")


@PRE_AGGREGATIONS.register("nnm")
def _nnm(fraction: float = 0.2, weighted: bool = False) -> PreAggregation:
    check_fraction("nnm", fraction)
    if not isinstance(weighted, bool):
        raise AggregationError(f"nnm: weighted = {weighted!r} must be true or false")
    return PreAggregation(
        "nnm",
        nnm,
        {"fraction": fraction, "weighted": weighted},
        mixes="its nearest rows (n - f of n)",
    )


@PRE_AGGREGATIONS.register("bucketing")
def _bucketing(s: int = 2, seed: int = 0) -> PreAggregation:
    check_bucket_size(s)
    return PreAggregation(
        "bucketing",
        bucketing,
        {"s": s, "seed": int(seed)},
        bucket=s,
        mixes=f"a random bucket of {s} rows",
    )


@PRE_AGGREGATIONS.register("arc")
def _arc(fraction: float = 0.2) -> PreAggregation:
    check_fraction("arc", fraction)
    return PreAggregation("arc", arc, {"fraction": fraction})


@dataclass(frozen=True, slots=True)
class PreAggregated:
    """An ``Aggregator``: ``pre`` on the rows, then ``rule`` on what it returns."""

    pre: PreAggregation
    rule: Aggregator

    @property
    def name(self) -> str:
        """``"<pre>+<rule>"``, e.g. ``"nnm+krum"``."""
        return f"{self.pre.name}+{self.rule.name}"

    @property
    def linear(self) -> bool:
        """Never: the rule needs every row to pre-aggregate."""
        return False

    @property
    def params(self) -> Mapping[str, Any]:
        """The rule's parameters (what ``f`` it assumes, for breakdown warnings)."""
        out: Mapping[str, Any] = getattr(self.rule, "params", {})
        return out

    def __call__(self, updates: Matrix, weights: Vector) -> Vector:
        """The rule applied to the pre-aggregated rows."""
        self.check(updates.shape[0])
        rows, w = self.pre(updates, weights)
        return self.rule(rows, w)

    def check(self, n: int) -> None:
        """Raise ``AggregationError`` if the rule cannot work with the rows it would get."""
        self.rule.check(self.pre.rows_out(n))


@dataclass(frozen=True, slots=True)
class PreAggregatedClients:
    """A rule with per-client state (FoolsGold) behind a pre-aggregation that keeps rows apart.

    ARC only rescales each row, so row ``i`` is still client ``i``'s update and the rule's
    history under ``i``'s node id stays that client's; the state is the rule's own.
    """

    pre: PreAggregation
    rule: ClientAware

    @property
    def name(self) -> str:
        """``"<pre>+<rule>"``, e.g. ``"arc+foolsgold"``."""
        return f"{self.pre.name}+{getattr(self.rule, 'name', 'rule')}"

    @property
    def linear(self) -> bool:
        """Never: the rule needs every row."""
        return False

    @property
    def params(self) -> Mapping[str, Any]:
        """The rule's parameters."""
        out: Mapping[str, Any] = getattr(self.rule, "params", {})
        return out

    def __call__(self, updates: Matrix, weights: Vector) -> Vector:
        """The rule on the pre-aggregated rows of one round, without history."""
        rows, w = self.pre(updates, weights)
        out: Vector = self.rule(rows, w)  # type: ignore[operator]
        return out

    def check(self, n: int) -> None:
        """Any number of clients works for the rule; the pre-aggregation keeps ``n`` rows."""

    def aggregate_clients(self, nodes: Sequence[str], updates: Matrix, weights: Vector) -> Vector:
        """The rule's ``aggregate_clients`` on the pre-aggregated rows (row ``i``: ``nodes[i]``)."""
        rows, w = self.pre(updates, weights)
        return self.rule.aggregate_clients(nodes, rows, w)

    def state_dict(self) -> Mapping[str, object]:
        """The rule's per-client state."""
        return self.rule.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the rule's per-client state."""
        self.rule.load_state_dict(state)


def make_rule(
    aggregator: str,
    aggregator_args: Mapping[str, Any],
    pre_aggregation: str = "none",
    pre_aggregation_args: Mapping[str, Any] | None = None,
) -> Aggregator:
    """The rule ``[strategy]`` names, behind its pre-aggregation unless that is ``"none"``.

    Every place that aggregates (simulation, coordinator, edge, peer) builds its rule here, so
    a pre-aggregation applies wherever the rule does.
    """
    rule = make_aggregator(aggregator, **aggregator_args)
    if pre_aggregation == "none":
        if pre_aggregation_args:
            raise AggregationError(
                f"pre_aggregation_args {dict(pre_aggregation_args)} given without a "
                "pre_aggregation; set pre_aggregation or remove them"
            )
        return rule
    pre = PRE_AGGREGATIONS.get(pre_aggregation)(**(pre_aggregation_args or {}))
    if isinstance(rule, ClientAware):
        if pre.mixes is None:
            return PreAggregatedClients(pre, rule)
        raise AggregationError(
            f"{aggregator} keeps a history per client and scores how alike the histories are; "
            f"{pre_aggregation} replaces each client's row by the average of {pre.mixes}, so "
            "the history kept under a node id would not be that client's updates, and the "
            "mixed rows are alike by construction (honest clients would score as sybils); "
            "use pre_aggregation = 'arc' (it rescales each client's own row) or 'none'"
        )
    return PreAggregated(pre, rule)


class RuleSettings(Protocol):
    """What ``[strategy]`` says about the rule (``murmura.config.StrategySection``)."""

    @property
    def aggregator(self) -> str:
        """The rule's registered name."""
        ...

    @property
    def aggregator_args(self) -> dict[str, Any]:
        """The rule's parameters."""
        ...

    @property
    def pre_aggregation(self) -> str:
        """The pre-aggregation's registered name, or ``"none"``."""
        ...

    @property
    def pre_aggregation_args(self) -> dict[str, Any]:
        """The pre-aggregation's parameters."""
        ...


def strategy_rule(s: RuleSettings) -> Aggregator:
    """``make_rule`` of a ``[strategy]`` table."""
    return make_rule(s.aggregator, s.aggregator_args, s.pre_aggregation, s.pre_aggregation_args)
