"""Breakdown points: how many Byzantine clients per round each aggregation rule tolerates.

A run whose ``[attack] fraction`` puts more attackers in a round than ``[strategy]
aggregator`` tolerates is legitimate (it shows the rule failing), but it must not be a
surprise: ``breakdown_warning`` says so at load time, naming the rule and its limit.

- ``weighted_mean``: none; one client moves the mean arbitrarily far (Blanchard et al. 2017);
- ``coordinate_median``, ``geometric_median``: fewer than half (breakdown point 1/2; Yin et
  al. 2018, Pillutla et al. 2022);
- ``trimmed_mean``: ``floor(beta n)`` of a round of ``n`` (Yin et al. 2018);
- ``krum``, ``multi_krum``: ``f``, with ``n >= 2f + 3`` (Blanchard et al. 2017);
- ``bulyan``: ``f``, with ``n >= 4f + 3`` (El Mhamdi et al. 2018).

The clipping rules bound each client's influence instead and have no such count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from murmura.aggregate import make_aggregator
from murmura.aggregate.trimmed_mean import trimmed_count

if TYPE_CHECKING:  # the config calls breakdown_warning at load time; a type, not a cycle
    from murmura.config import Config


@dataclass(frozen=True, slots=True)
class Tolerance:
    """The most Byzantine clients a rule tolerates in a round of ``n``, and that limit in words."""

    attackers: int
    limit: str


def tolerance(rule: str, params: Mapping[str, Any], n: int) -> Tolerance | None:
    """What ``rule`` with ``params`` tolerates in a round of ``n``; None: no breakdown count."""
    if rule == "weighted_mean":
        return Tolerance(0, "none: its breakdown point is 0, one client moves the mean anywhere")
    if rule in ("coordinate_median", "geometric_median"):
        return Tolerance((n - 1) // 2, "fewer than half of the round (breakdown point 1/2)")
    if rule == "trimmed_mean":
        beta = float(params.get("beta", 0.1))
        k = trimmed_count(n, beta)
        return Tolerance(k, f"floor(beta n) = {k} of a round of n = {n} (beta = {beta})")
    if rule in ("krum", "multi_krum"):
        f = int(params.get("f", 1))
        return Tolerance(f, f"f = {f} of a round of n = {n} (it needs n >= 2f + 3)")
    if rule == "bulyan":
        f = int(params.get("f", 1))
        return Tolerance(f, f"f = {f} of a round of n = {n} (it needs n >= 4f + 3)")
    return None


def round_size(cfg: Config) -> int:
    """Updates one aggregator combines per round: the cohort, or the smallest edge's share."""
    if cfg.topology.kind != "tree":
        return cfg.cohort_size()
    s = cfg.strategy
    children = max(cfg.partition.num_clients // cfg.topology.edges, 1)
    return min(children, max(s.min_clients, math.ceil(s.fraction * children)))


def breakdown_warning(cfg: Config) -> str | None:
    """Why ``[attack] fraction`` exceeds what the aggregator tolerates, or None when it does not.

    Attackers are the ``round(fraction * num_clients)`` clients that ``choose_byzantine``
    picks; a round of ``n`` holds ``n / num_clients`` of them on average.
    """
    a, s = cfg.attack, cfg.strategy
    if a.kind == "none" or cfg.topology.kind not in ("star", "tree"):
        return None
    total = math.floor(a.fraction * cfg.partition.num_clients + 0.5)  # as choose_byzantine
    n = round_size(cfg)
    expected = total * n / cfg.partition.num_clients
    params = getattr(make_aggregator(s.aggregator, **s.aggregator_args), "params", {})
    tol = tolerance(s.aggregator, params, n)
    if tol is None or expected <= tol.attackers:
        return None
    return (
        f"attack.fraction = {a.fraction} puts about {expected:.3g} Byzantine clients in each "
        f"round of {n}, beyond what strategy.aggregator = {s.aggregator!r} tolerates: "
        f"{tol.limit}; expect the attack to succeed"
    )
