"""The in-process round loop: sample, train, validate, aggregate, evaluate, report.

Omniscient attacker hook (simulation only; each tree edge has the same): a client that
implements ``OmniscientClient`` (an attack such as ALIE or IPM, see ``murmura.attacks``)
trains like any other, but its result is held back until every other result of the round
has been validated; the runtime then calls ``client.craft(view, own)`` with a ``HonestView``
of the accepted honest updates, and validates what it returns like any update. Strategies
never see the difference.

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
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from murmura.aggregate.buffer import UpdateBuffer
from murmura.client import Client
from murmura.compress.accounting import downlink_counts, round_bytes, uplink_counts
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
from murmura.types import EvaluateRes, Failure, FitIns, FitRes, RoundMetrics, Vector
from murmura.validation import Check, default_checks, validate, validate_evaluation

log = logging.getLogger(__name__)
RoundCallback = Callable[[RoundMetrics, Vector], None]


@dataclass(frozen=True, slots=True)
class HonestView:
    """What an omniscient attacker sees: this round's validated honest results."""

    round: int
    updates: Sequence[Vector]
    num_examples: Sequence[int]
    num_byzantine: int


@runtime_checkable
class OmniscientClient(Protocol):
    """A simulated attacker that crafts its update from the round's honest updates."""

    node_id: str

    def craft(self, view: HonestView, own: FitRes) -> FitRes:
        """The update to send, given the honest view and this client's own honest result."""
        ...


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


@dataclass(slots=True)
class History:
    """The outcome of a run: the final weights and one ``RoundMetrics`` per round."""

    weights: Vector
    rounds: list[RoundMetrics] = field(default_factory=list)


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
        history = History(self.weights)
        for r in range(start, rounds + 1):
            if budget_stops(self.strategy, r):
                log.warning("round %d would exceed the budget: stopping after round %d", r, r - 1)
                break
            metrics = self.run_round(r, final=r == rounds)
            history.rounds.append(metrics)
            if on_round is not None:
                on_round(metrics, self.weights)
        history.weights = self.weights
        return history

    def run_round(self, round_: int, final: bool = False) -> RoundMetrics:
        """One round: every failure is recorded with its node and reason; the round goes on."""
        t0 = time.perf_counter()
        excluded = self.observer.excluded if self.observer is not None else ()
        nodes = [n for n in self.clients if n not in excluded]
        cohort = [self.clients[n] for n in self.strategy.sample(round_, nodes)]
        config = self.strategy.configure(round_, self.weights)
        ins = FitIns(round_, self.weights, config)
        keep_rows = self.strategy.keep_rows or self.observer is not None
        buffer = UpdateBuffer(len(cohort), self.weights.size, keep_rows, self.max_weight_share)
        failures = self._collect(round_, cohort, ins, buffer)
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
        final = final or budget_stops(self.strategy, round_ + 1)
        metrics.train_loss = buffer.mean_metric("train_loss")
        if final or (self.evaluate_every > 0 and round_ % self.evaluate_every == 0):
            ev = self.strategy.evaluate(round_, self.weights)
            if ev is not None:
                metrics.test_loss, metrics.test_accuracy = ev.loss, ev.metrics.get("accuracy")
                metrics.extra.update({k: v for k, v in ev.metrics.items() if k != "accuracy"})
            self._evaluate_federated(round_, nodes, metrics)
        metrics.seconds = time.perf_counter() - t0
        return metrics

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

    def _collect(
        self, round_: int, cohort: Sequence[Client], ins: FitIns, buffer: UpdateBuffer
    ) -> list[Failure]:
        """Validate every result into ``buffer``; omniscient attackers craft theirs last."""
        omniscient = {c.node_id for c in cohort if isinstance(c, OmniscientClient)}
        failures: list[Failure] = []
        held: list[tuple[str, FitRes]] = []
        honest: list[FitRes] = []
        for node, outcome in self.executor.fit(cohort, ins):
            if node in omniscient and isinstance(outcome, FitRes):
                held.append((node, outcome))
                continue
            failure = self._accept(round_, node, outcome, buffer)
            if failure is not None:
                failures.append(failure)
            elif omniscient and isinstance(outcome, FitRes):
                honest.append(outcome)
        view = HonestView(
            round_, [r.update for r in honest], [r.num_examples for r in honest], len(omniscient)
        )
        for node, own in held:
            attacker = self.clients[node]
            assert isinstance(attacker, OmniscientClient)
            try:
                crafted: FitRes | BaseException = attacker.craft(view, own)
            except Exception as exc:  # noqa: BLE001 - a failing attacker must not end the round
                crafted = exc
            failure = self._accept(round_, node, crafted, buffer)
            if failure is not None:
                failures.append(failure)
        return failures

    def _accept(
        self, round_: int, node: str, outcome: FitRes | BaseException, buffer: UpdateBuffer
    ) -> Failure | None:
        """Validate one outcome into ``buffer``, or return why it was left out."""
        if isinstance(outcome, BaseException):
            log.warning("round %d node %s: client raised %r", round_, node, outcome)
            return Failure(node, f"client raised {type(outcome).__name__}: {outcome}")
        try:
            validate(node, round_, outcome, self.checks)
        except UpdateRejected as exc:
            log.warning("%s", exc)
            return Failure(node, f"rejected: {exc.reason}")
        buffer.add(node, outcome.update, outcome.num_examples, outcome.metrics)
        return None
