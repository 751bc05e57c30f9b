"""A statistics round's plan and its two halves: what a site computes, what the aggregator releases.

Simulation (``murmura.analytics.simulate``) and deployment (``murmura.analytics.grpc_round``)
both call these, so a setting means the same in both. Plain: every site sends its summary
(``murmura.analytics.wire``) and the aggregator merges them in site order. Secure: every site
sends its bounded sums divided by the public ``max_rows`` (each number in [-1, 1], what the
SecAgg+ quantiser takes) and the aggregator only learns their sum. With ``noise_multiplier``
the aggregator adds Gaussian noise to the sums before anything is released (central DP, as in
training) and accounts for it with the run's accountant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from murmura.analytics.bounded import (
    feature_scale,
    from_bounded,
    gaussian_noised,
    statistics_epsilon,
    to_bounded,
)
from murmura.analytics.query import StatsQuery, query_from_config
from murmura.analytics.result import FederatedStats, finish
from murmura.analytics.summary import F64, Summary, local_summary
from murmura.config import Config
from murmura.errors import ConfigError


@dataclass(frozen=True, slots=True)
class StatsPlan:
    """How a statistics round runs: the query, secure aggregation, DP noise and its accounting."""

    query: StatsQuery
    secure: bool = False
    max_rows: int | None = None
    """Public bound on a site's rows under secure aggregation (its sums are divided by it)."""
    noise_multiplier: float = 0.0
    delta: float = 1e-5
    accountant: str = "rdp"
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.secure or self.noise_multiplier > 0) and (
            self.query.minmax or not self.query.clip
        ):
            raise ConfigError(
                "secure aggregation and DP need clipped values (clip) and no min/max (minmax)"
            )


def plan_from_config(cfg: Config, classes: int, max_rows: int | None = None) -> StatsPlan:
    """The plan of ``cfg``'s ``[stats]``; ``max_rows`` when ``[stats] max_rows`` is None."""
    s = cfg.stats
    rows = s.max_rows or max_rows
    if s.secure_aggregation and rows is None:
        raise ConfigError("[stats] secure_aggregation = true needs [stats] max_rows")
    return StatsPlan(
        query_from_config(s, classes),
        s.secure_aggregation,
        rows,
        s.noise_multiplier,
        s.delta,
        cfg.privacy.accountant,
        cfg.run.seed,
    )


def site_summary(
    x: NDArray[np.floating], y: NDArray[np.integer] | None, plan: StatsPlan
) -> Summary:
    """A site's summary of its own rows; ``ValueError`` naming the column or labels at fault."""
    return local_summary(x, y, plan.query)


def secure_input(s: Summary, plan: StatsPlan) -> F64:
    """What a site feeds SecAgg+: its bounded sums over ``max_rows``, each in [-1, 1]."""
    assert plan.max_rows is not None
    if s.count > plan.max_rows:
        raise ValueError(f"{s.count:g} rows, more than [stats] max_rows = {plan.max_rows}")
    return to_bounded(s, feature_scale(plan.query, s.features)) / plan.max_rows


def secure_output(total: F64, plan: StatsPlan, features: int) -> Summary:
    """The federation's summary from the SecAgg+ sum of the sites' ``secure_input``."""
    assert plan.max_rows is not None
    scale = feature_scale(plan.query, features)
    return from_bounded(total * plan.max_rows, scale, plan.query.bins, plan.query.classes)


def release(
    merged: Summary,
    plan: StatsPlan,
    sites: int,
    site_labels: Mapping[str, F64] | None = None,
    failures: Mapping[str, str] | None = None,
) -> FederatedStats:
    """Noise (if asked), account and finish the federation's summary into its statistics."""
    epsilon = None
    if plan.noise_multiplier > 0:
        rng = np.random.default_rng([plan.seed, 0x57A75])
        merged = gaussian_noised(merged, plan.query, plan.noise_multiplier, rng)
        epsilon = statistics_epsilon(plan.noise_multiplier, plan.delta, plan.accountant)
    private = plan.secure or epsilon is not None  # a site's own counts would bypass both
    stats = finish(merged, plan.query, sites, None if private else site_labels, failures)
    delta = plan.delta if epsilon is not None else None
    return replace(stats, secure=plan.secure, epsilon=epsilon, delta=delta)
