"""One asynchronous arrival: refused when too stale, else weighted by its staleness.

The pure part of FedAsync (Xie et al. 2019) and FedBuff (Nguyen et al. 2022) that the
simulated event queue (``murmura.simtime.asynchronous``) and the deployed coordinator
(``murmura.node.async_coordinator``) share, so a setting means the same in both.
Staleness ``tau`` counts the aggregations since the client received its model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from murmura.config.clock import ClockSection
from murmura.simtime.staleness import Staleness, make_staleness
from murmura.types import Vector


@dataclass(frozen=True, slots=True)
class AsyncRule:
    """FedAsync (``buffer_size = 1``, mixing) or FedBuff, with staleness and its limit."""

    algorithm: str
    buffer_size: int
    mixing: float
    staleness: Staleness
    max_staleness: int | None
    concurrency: int


def async_rule(clock: ClockSection, concurrency: int) -> AsyncRule:
    """The rule ``[clock]`` describes; ``concurrency`` when ``clock.concurrency`` is unset."""
    return AsyncRule(
        clock.algorithm,
        1 if clock.algorithm == "fedasync" else clock.buffer_size,
        clock.mixing,
        make_staleness(clock.staleness, clock.a, clock.b),
        clock.max_staleness,
        clock.concurrency or concurrency,
    )


def stale_reason(tau: int, max_staleness: int | None) -> str | None:
    """Why an update of staleness ``tau`` is refused, or None if it may be used."""
    if max_staleness is not None and tau > max_staleness:
        return f"stale: staleness {tau} > clock.max_staleness {max_staleness}"
    return None


def weighted_update(rule: AsyncRule, tau: int, delta: Vector) -> Vector:
    """FedBuff: ``s(tau) delta_k``; FedAsync: ``alpha s(tau) (w_k - w)`` with ``delta = w_k - w``.

    ``delta`` is the client's update (FedBuff) or its local model minus the current model
    (FedAsync), which the caller computes because only it holds both models.
    """
    if rule.algorithm == "fedasync":
        delta = delta * np.float32(rule.mixing)
    return (delta * np.float32(rule.staleness(tau))).astype(np.float32)
