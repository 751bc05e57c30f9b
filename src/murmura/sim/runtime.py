"""The simulated star: a server's rounds over in-process clients, on the round engine.

Each round is ``murmura.engine.server_round``'s (sample, configure, fit on the executor,
validate, with its omniscient attacker hook), then the strategy's aggregation and the hooks
below; which rounds run, stop early and are evaluated is ``murmura.engine.run_loop``'s.

Round observer hook: an optional ``RoundObserver`` (anomaly scores) sees each round's
validated updates after aggregation, adds to the round's metrics, and can name nodes to leave
out of later rounds.

Budget hook: a strategy that implements ``Budgeted`` (differential privacy, see
``murmura.strategy.dp``) adds ``round_metrics`` to each round's metrics (epsilon), and the run
ends before any round for which ``should_stop`` is true; the last round run is then evaluated.
The protocol and its helpers live in ``murmura.strategy.hooks``, shared with the coordinator.

Report hook: a strategy that implements ``RoundReporter`` (secure aggregation, see
``murmura.strategy.secure``) amends each round's metrics after aggregating: clients that
dropped out inside the protocol become failures, ``participants`` counts those in the sum.

Federated evaluation: in the rounds that are evaluated, a ``FederatedEvaluator`` strategy
(``murmura.strategy.hooks``) names clients that evaluate the new model on their own held-out
data; valid results are aggregated into ``federated_loss`` and ``federated_accuracy`` next to
the central figures, and a client that raises or returns a bad result is a failure of the
round ("evaluate: ...").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from murmura.aggregate.buffer import UpdateBuffer
from murmura.client import Client
from murmura.compress.accounting import downlink_counts, round_bytes, uplink_counts
from murmura.engine.run_loop import (
    History,
    RoundCallback,
    evaluates,
    is_final,
    record_evaluation,
    run_simulation,
)
from murmura.engine.server_round import collect, plan_round
from murmura.errors import UpdateRejected
from murmura.sim.executor import Executor, SequentialExecutor, evaluate_each
from murmura.strategy.base import Strategy
from murmura.strategy.evaluation import record_federated
from murmura.strategy.hooks import (
    budget_metrics,
    budget_stops,
    evaluation_aggregate,
    evaluation_sample,
)
from murmura.types import EvaluateRes, Failure, RoundMetrics, Vector
from murmura.validation import Check, default_checks, validate_evaluation

log = logging.getLogger(__name__)


class RoundObserver(Protocol):
    """Sees each round's accepted updates after aggregation (e.g. anomaly scores)."""

    @property
    def excluded(self) -> Collection[str]:
        """Nodes to leave out of later rounds."""
        ...

    def observe(
        self, round_: int, weights: Vector, updates: UpdateBuffer, strategy: Strategy
    ) -> dict[str, object]:
        """Entries for this round's ``RoundMetrics.extra``; ``weights`` are the previous model."""
        ...


@runtime_checkable
class RoundReporter(Protocol):
    """A strategy that amends its round's metrics (failures and figures it alone knows)."""

    def report(self, round_: int, metrics: RoundMetrics) -> None:
        """Add this round's failures and entries to ``metrics``, set ``participants``."""
        ...


class Simulation:
    """Runs federated rounds over in-process clients with a Strategy."""

    def __init__(
        self,
        strategy: Strategy,
        clients: Sequence[Client],
        initial_weights: Vector,
        *,
        executor: Executor | None = None,
        checks: Sequence[Check] | None = None,
        evaluate_every: int = 1,
        observer: RoundObserver | None = None,
        max_weight_share: float | None = None,
    ) -> None:
        self.strategy = strategy
        self.max_weight_share = max_weight_share
        self.observer = observer
        self.clients = {c.node_id: c for c in clients}
        self.weights = np.asarray(initial_weights, dtype=np.float32).copy()
        self.executor = executor or SequentialExecutor()
        self.checks = list(checks) if checks is not None else default_checks(self.weights.size)
        self.evaluate_every = evaluate_every

    def run(self, rounds: int, on_round: RoundCallback | None = None, start: int = 1) -> History:
        """Run rounds ``start..rounds``; ``on_round`` sees each round's metrics and weights."""
        return run_simulation(self, rounds, on_round, start)

    def stops(self, round_: int) -> bool:
        """Whether running ``round_`` would exceed the strategy's privacy budget."""
        return budget_stops(self.strategy, round_)

    def model(self) -> Vector:
        """The global model."""
        return self.weights

    def run_round(self, round_: int, final: bool = False) -> RoundMetrics:
        """One round: every failure is recorded with its node and reason; the round goes on."""
        t0 = time.perf_counter()
        excluded = self.observer.excluded if self.observer is not None else ()
        nodes = [n for n in self.clients if n not in excluded]
        plan = plan_round(self.strategy, round_, self.clients, nodes, self.weights)
        cohort = plan.cohort
        keep_rows = self.strategy.keep_rows or self.observer is not None
        buffer = UpdateBuffer(len(cohort), self.weights.size, keep_rows, self.max_weight_share)
        outcomes = self.executor.fit(cohort, plan.ins)
        failures = collect(round_, cohort, outcomes, buffer, self.checks)
        previous = self.weights
        new = self.strategy.aggregate(round_, self.weights, buffer, failures)
        if new is not None:
            self.weights = new
        metrics = RoundMetrics(round_, participants=len(buffer), failures=failures)
        d = self.weights.size  # bytes on the wire: see murmura.compress.accounting
        downs = downlink_counts(buffer.metrics, d, len(cohort))
        metrics.extra.update(round_bytes(uplink_counts(buffer.metrics, d), downs))
        if isinstance(self.strategy, RoundReporter):
            self.strategy.report(round_, metrics)
        if self.observer is not None:
            metrics.extra.update(self.observer.observe(round_, previous, buffer, self.strategy))
        metrics.extra.update(budget_metrics(self.strategy, round_))
        metrics.train_loss = buffer.mean_metric("train_loss")
        if evaluates(round_, self.evaluate_every, is_final(round_, final, self.stops)):
            self.evaluate_round(round_, nodes, metrics)
        metrics.seconds = time.perf_counter() - t0
        return metrics

    def evaluate_round(self, round_: int, nodes: Sequence[str], metrics: RoundMetrics) -> None:
        """Central evaluation of the model (if the strategy has a test set), then federated."""
        ev = self.strategy.evaluate(round_, self.weights)
        if ev is not None:
            record_evaluation(metrics, ev)
        self._evaluate_federated(round_, nodes, metrics)

    def _evaluate_federated(self, round_: int, nodes: Sequence[str], metrics: RoundMetrics) -> None:
        """The strategy's sampled clients evaluate the new model; failures join the round's."""
        chosen = evaluation_sample(self.strategy, round_, nodes)
        if not chosen:
            return
        results: list[tuple[str, EvaluateRes]] = []
        failures: list[Failure] = []
        for node, outcome in evaluate_each([self.clients[n] for n in chosen], self.weights):
            if isinstance(outcome, BaseException):
                log.warning("round %d node %s: evaluate raised %r", round_, node, outcome)
                why = f"client raised {type(outcome).__name__}: {outcome}"
                failures.append(Failure(node, f"evaluate: {why}"))
                continue
            try:
                validate_evaluation(node, round_, outcome)
            except UpdateRejected as exc:
                log.warning("%s", exc)
                failures.append(Failure(node, f"evaluate: rejected: {exc.reason}"))
                continue
            results.append((node, outcome))
        result = evaluation_aggregate(self.strategy, round_, results, failures)
        record_federated(metrics, result, [r for _, r in results])
        metrics.failures.extend(failures)
