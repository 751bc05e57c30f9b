"""The in-process round loop: sample, train, validate, aggregate, evaluate, report."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from murmura.aggregate.buffer import UpdateBuffer
from murmura.client import Client
from murmura.errors import UpdateRejected
from murmura.sim.executor import Executor, SequentialExecutor
from murmura.strategy.base import Strategy
from murmura.types import Failure, FitIns, FitRes, RoundMetrics, Vector
from murmura.validation import Check, default_checks, validate

log = logging.getLogger(__name__)
RoundCallback = Callable[[RoundMetrics, Vector], None]


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
    ) -> None:
        self.strategy = strategy
        self.clients = {c.node_id: c for c in clients}
        self.weights = np.asarray(initial_weights, dtype=np.float32).copy()
        self.executor = executor or SequentialExecutor()
        self.checks = list(checks) if checks is not None else default_checks(self.weights.size)
        self.evaluate_every = evaluate_every

    def run(self, rounds: int, on_round: RoundCallback | None = None, start: int = 1) -> History:
        """Run rounds ``start..rounds``; ``on_round`` sees each round's metrics and weights."""
        history = History(self.weights)
        for r in range(start, rounds + 1):
            metrics = self.run_round(r, final=r == rounds)
            history.rounds.append(metrics)
            if on_round is not None:
                on_round(metrics, self.weights)
        history.weights = self.weights
        return history

    def run_round(self, round_: int, final: bool = False) -> RoundMetrics:
        """One round: every failure is recorded with its node and reason; the round goes on."""
        t0 = time.perf_counter()
        cohort = [self.clients[n] for n in self.strategy.sample(round_, list(self.clients))]
        config = self.strategy.configure(round_, self.weights)
        ins = FitIns(round_, self.weights, config)
        buffer = UpdateBuffer(len(cohort), self.weights.size, self.strategy.keep_rows)
        failures: list[Failure] = []
        for node, outcome in self.executor.fit(cohort, ins):
            failure = self._accept(round_, node, outcome, buffer)
            if failure is not None:
                failures.append(failure)
        new = self.strategy.aggregate(round_, self.weights, buffer, failures)
        if new is not None:
            self.weights = new
        metrics = RoundMetrics(round_, participants=len(buffer), failures=failures)
        metrics.train_loss = _mean_metric(buffer, "train_loss")
        if final or (self.evaluate_every > 0 and round_ % self.evaluate_every == 0):
            ev = self.strategy.evaluate(round_, self.weights)
            if ev is not None:
                metrics.test_loss, metrics.test_accuracy = ev.loss, ev.metrics.get("accuracy")
        metrics.seconds = time.perf_counter() - t0
        return metrics

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


def _mean_metric(buffer: UpdateBuffer, key: str) -> float | None:
    """Examples-weighted mean of a metric the clients reported, if any did."""
    pairs = [
        (m[key], n) for m, n in zip(buffer.metrics, buffer.num_examples, strict=True) if key in m
    ]
    total = sum(n for _, n in pairs)
    return None if not pairs or total == 0 else float(sum(v * n for v, n in pairs) / total)
