"""Federated evaluation: clients evaluate the global model on their own held-out data.

The math is one pure function, :func:`weighted_evaluation`: the examples-weighted mean of the
clients' losses and of each metric (Flower's default ``evaluate_metrics_aggregation_fn``). A
metric is averaged over the clients that report it, weighted by their example counts; clients
with 0 examples (nothing held out) take no part. ``FederatedEvaluation`` holds the sampling
settings (Flower's ``fraction_evaluate`` and ``min_evaluate_clients``) and samples with its
own seeded stream, apart from the training sample's. The round loops put the outcome into
the round's metrics with :func:`record_federated`; :func:`federated_summary` picks the final
figures for ``summary.json``.

The evaluation figures are the server's log: under central DP they are not part of the
privacy release (like the clients' training loss), and under secure aggregation the server
sees each sampled client's loss and metrics, though never its update.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from murmura.errors import ConfigError
from murmura.seeding import derive_seed
from murmura.types import EvaluateRes, RoundMetrics

log = logging.getLogger(__name__)
_EVALUATE = 0xE7A1  # this stream's tag, apart from the training sample's (round_rng)


def weighted_evaluation(results: Sequence[EvaluateRes]) -> EvaluateRes | None:
    """Examples-weighted mean of the losses and of every metric; None without any example.

    ``metrics[k]`` is averaged over the results that report ``k``; ``num_examples`` is the total.
    """
    used = [r for r in results if r.num_examples > 0]
    total = sum(int(r.num_examples) for r in used)
    if total == 0:
        return None
    counts = np.array([float(r.num_examples) for r in used])
    loss = float(counts @ np.array([float(r.loss) for r in used]) / total)
    metrics: dict[str, float] = {}
    for key in sorted({k for r in used for k in r.metrics}):
        have = [(float(r.num_examples), float(r.metrics[key])) for r in used if key in r.metrics]
        w, v = np.array(have).T
        metrics[key] = float(w @ v / w.sum())
    return EvaluateRes(loss=loss, num_examples=total, metrics=metrics)


@dataclass(frozen=True, slots=True)
class FederatedEvaluation:
    """Who evaluates: ``max(min_clients, ceil(fraction * N))`` of the N nodes, seeded per round.

    ``fraction = 0`` turns federated evaluation off. Fewer than ``min_clients`` nodes to pick
    from, or fewer than ``min_clients`` results with examples, and the round reports none.
    """

    fraction: float = 0.0
    min_clients: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.fraction <= 1:
            raise ConfigError(f"fraction_evaluate must be in [0, 1], got {self.fraction}")
        if self.min_clients < 1:
            raise ConfigError(f"min_evaluate_clients must be >= 1, got {self.min_clients}")

    def sample(self, round_: int, nodes: Sequence[str]) -> list[str]:
        """A seeded uniform sample without replacement, in the nodes' order; [] when off."""
        if self.fraction == 0:
            return []
        if len(nodes) < self.min_clients:
            log.warning(
                "round %d: %d nodes < min_evaluate_clients %d; no federated evaluation",
                round_,
                len(nodes),
                self.min_clients,
            )
            return []
        k = min(len(nodes), max(self.min_clients, math.ceil(self.fraction * len(nodes))))
        rng = np.random.default_rng(derive_seed(self.seed, round_, _EVALUATE))
        return [nodes[i] for i in np.sort(rng.choice(len(nodes), size=k, replace=False))]

    def aggregate(self, round_: int, results: Sequence[EvaluateRes]) -> EvaluateRes | None:
        """The weighted mean, if at least ``min_clients`` results hold examples."""
        used = sum(1 for r in results if r.num_examples > 0)
        if used < self.min_clients:
            log.warning(
                "round %d: %d evaluations with examples < min_evaluate_clients %d; none reported",
                round_,
                used,
                self.min_clients,
            )
            return None
        return weighted_evaluation(results)


def record_federated(
    metrics: RoundMetrics, result: EvaluateRes | None, results: Sequence[EvaluateRes]
) -> None:
    """Put a round's federated evaluation into its metrics line.

    ``federated_clients`` counts the clients whose evaluation holds examples;
    ``federated_<metric>`` holds every aggregated metric besides accuracy.
    """
    metrics.federated_clients = sum(1 for r in results if r.num_examples > 0)
    if result is None:
        return
    metrics.federated_loss = result.loss
    metrics.federated_accuracy = result.metrics.get("accuracy")
    metrics.extra["federated_examples"] = result.num_examples
    for key, value in result.metrics.items():
        if key != "accuracy":
            metrics.extra[f"federated_{key}"] = value


def federated_summary(last: Mapping[str, object]) -> dict[str, object]:
    """``summary.json`` entries from the last round's metrics line (none if it had none)."""
    if last.get("federated_clients") is None:
        return {}
    return {
        "final_federated_accuracy": last.get("federated_accuracy"),
        "final_federated_loss": last.get("federated_loss"),
        "final_federated_clients": last.get("federated_clients"),
    }
