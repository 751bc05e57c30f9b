"""FedAvg (McMahan et al. 2017): sample a fraction of nodes, average their deltas by examples."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from murmura.aggregate.base import Aggregator, ClientAware, make_aggregator
from murmura.aggregate.buffer import UpdateBuffer
from murmura.errors import AggregationError, ConfigError
from murmura.seeding import round_rng
from murmura.strategy.base import StrategyBase, Sum
from murmura.strategy.evaluation import FederatedEvaluation
from murmura.types import EvaluateRes, Failure, Scalar, Vector

log = logging.getLogger(__name__)
EvaluateFn = Callable[[Vector], EvaluateRes]


class FedAvg(StrategyBase):
    """Federated averaging with a pluggable aggregation rule and seeded client sampling.

    Each round samples ``max(min_clients, ceil(fraction * N))`` nodes; the round's deltas are
    combined by ``aggregator`` (examples-weighted mean by default) and applied with
    ``server_lr``. With fewer than ``min_clients`` valid results the model stays unchanged.
    Central evaluation goes through ``evaluate_fn``; federated evaluation (off while
    ``fraction_evaluate`` is 0) samples ``max(min_evaluate_clients, ceil(fraction_evaluate *
    N))`` nodes to evaluate on their own data and averages their results by examples.
    """

    def __init__(
        self,
        *,
        fraction: float = 1.0,
        min_clients: int = 1,
        aggregator: Aggregator | None = None,
        server_lr: float = 1.0,
        seed: int = 0,
        evaluate_fn: EvaluateFn | None = None,
        fraction_evaluate: float = 0.0,
        min_evaluate_clients: int = 1,
    ) -> None:
        if not 0 < fraction <= 1:
            raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
        if min_clients < 1:
            raise ConfigError(f"min_clients must be >= 1, got {min_clients}")
        self._fraction, self.min_clients = fraction, min_clients
        self.aggregator = aggregator or make_aggregator("weighted_mean")
        self.server_lr, self.seed, self.evaluate_fn = server_lr, seed, evaluate_fn
        self.federated_evaluation = FederatedEvaluation(
            fraction_evaluate, min_evaluate_clients, seed
        )

    @property
    def keep_rows(self) -> bool:
        """Linear rules need only a running sum."""
        return not self.aggregator.linear

    @property
    def fraction(self) -> float:
        """The share of nodes sampled per round."""
        return self._fraction

    @property
    def min_results(self) -> int:
        """``min_clients``: with fewer results the model stays unchanged."""
        return self.min_clients

    def linear_refusal(self) -> str | None:
        """None with a linear rule (the weighted mean); else the rule needs every update."""
        if self.aggregator.linear:
            return None
        return (
            f"aggregator {self.aggregator.name!r} needs every client's individual update: "
            "use weighted_mean"
        )

    def cohort_size(self, num_nodes: int) -> int:
        """How many nodes are sampled per round out of ``num_nodes``."""
        return min(num_nodes, max(self.min_clients, math.ceil(self.fraction * num_nodes)))

    def sample(self, round_: int, nodes: Sequence[str]) -> list[str]:
        """A seeded uniform sample without replacement, in the nodes' original order."""
        k = self.cohort_size(len(nodes))
        if k < self.min_clients:
            raise ConfigError(
                f"round {round_}: {len(nodes)} nodes available, min_clients is {self.min_clients}"
            )
        if k == len(nodes):
            return list(nodes)
        chosen = np.sort(round_rng(self.seed, round_).choice(len(nodes), size=k, replace=False))
        return [nodes[i] for i in chosen]

    def configure(self, round_: int, weights: Vector) -> dict[str, Scalar]:
        """No per-round instructions beyond the model."""
        return {}

    def aggregate(
        self, round_: int, weights: Vector, updates: UpdateBuffer, failures: Sequence[Failure]
    ) -> Vector | None:
        """Apply the aggregated delta, or keep the model if too few results arrived for the rule."""
        if len(updates) < self.min_clients:
            log.warning(
                "round %d: %d results < min_clients %d; model unchanged",
                round_,
                len(updates),
                self.min_clients,
            )
            return None
        try:
            self.aggregator.check(len(updates))
        except AggregationError as exc:  # e.g. Bulyan's n >= 4f + 3 after rejected updates
            log.warning(
                "round %d: %d valid results: %s; model unchanged", round_, len(updates), exc
            )
            return None
        delta = self.combine(updates)
        return self.server_update(weights, delta)

    def combine(self, updates: UpdateBuffer) -> Vector:
        """The aggregated delta of this round's updates."""
        if self.aggregator.linear:
            return updates.weighted_mean()
        if isinstance(self.aggregator, ClientAware):  # FoolsGold: histories by node id
            return self.aggregator.aggregate_clients(
                updates.nodes, updates.rows(), updates.weights()
            )
        return self.aggregator(updates.rows(), updates.weights())

    def release(
        self, round_: int, weights: Vector, total: Sum | None, weight: float
    ) -> Vector | None:
        """The server step with ``total / weight`` as the round's delta (None: no sum)."""
        if total is None:
            return None
        if not weight > 0:
            log.warning("round %d: the sum's total weight is 0; model unchanged", round_)
            return None
        return self.server_update(weights, (np.asarray(total) / weight).astype(np.float32))

    def server_update(self, weights: Vector, delta: Vector) -> Vector:
        """Server SGD step: ``w + server_lr * delta``."""
        return (weights + np.float32(self.server_lr) * delta).astype(np.float32)

    def evaluate(self, round_: int, weights: Vector) -> EvaluateRes | None:
        """Central evaluation through ``evaluate_fn`` if one was given."""
        return None if self.evaluate_fn is None else self.evaluate_fn(weights)

    def sample_evaluate(self, round_: int, nodes: Sequence[str]) -> list[str]:
        """The nodes that evaluate the new model on their own data ([] when that is off)."""
        return self.federated_evaluation.sample(round_, nodes)

    def aggregate_evaluate(
        self,
        round_: int,
        results: Sequence[tuple[str, EvaluateRes]],
        failures: Sequence[Failure],
    ) -> EvaluateRes | None:
        """The examples-weighted mean of the clients' loss and metrics, or None."""
        return self.federated_evaluation.aggregate(round_, [res for _, res in results])


class FedAvgWithRuleState(FedAvg):
    """FedAvg whose rule keeps per-client state across rounds, checkpointed with the model."""

    def rule(self) -> ClientAware:
        """The stateful rule."""
        if not isinstance(self.aggregator, ClientAware):
            raise TypeError(f"{self.aggregator.name} keeps no per-client state")
        return self.aggregator

    def state_dict(self) -> dict[str, object]:
        """The rule's state (FoolsGold's histories)."""
        return {"kind": "rule", "rule": dict(self.rule().state_dict())}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore the rule's state; a state of another kind is refused."""
        rule = state.get("rule")
        if state.get("kind") != "rule" or not isinstance(rule, Mapping):
            raise ValueError(f"not a rule state (kind {state.get('kind')!r})")
        self.rule().load_state_dict(rule)


def fixed_lr_factory(cls: Callable[..., FedAvg]) -> Callable[..., FedAvg]:
    """A factory with the common strategy signature for a strategy without server optimiser.

    Every registered factory takes the same keywords (see ``murmura.strategy``); this one drops
    the optimiser keys and defaults ``server_lr`` to 1.
    """

    def make(
        *,
        server_lr: float | None = None,
        server_momentum: float | None = None,
        beta1: float | None = None,
        beta2: float | None = None,
        tau: float | None = None,
        **common: Any,
    ) -> FedAvg:
        make_cls = cls
        if cls is FedAvg and isinstance(common.get("aggregator"), ClientAware):
            make_cls = FedAvgWithRuleState
        return make_cls(server_lr=1.0 if server_lr is None else server_lr, **common)

    return make


fedavg = fixed_lr_factory(FedAvg)  # registered as "fedavg" and "fedprox"
