"""Asynchronous aggregation driven by the simulated clock as an event queue.

FedAsync (Xie et al. 2019): every arrival is mixed in, ``w <- w + alpha s(tau) (w_k - w)``
with ``w_k`` the client's local model and ``s`` the staleness function. FedBuff (Nguyen et
al. 2022): arrivals wait in a buffer of ``buffer_size``; each update ``s(tau) delta_k``; a full
buffer is one aggregation by the strategy's own rule and server step (so robust rules and
central DP apply per buffer). Staleness ``tau`` counts the aggregations since the client
received its model; past ``max_staleness`` the update is refused with the reason.

``concurrency`` clients train at any time: when one finishes (or goes offline) the server
hands the current model to a uniformly drawn idle, reachable client. The clients dispatched
at the same moment are trained together in one ``executor.fit`` (vectorised where the
executor is); their results wait in the queue until their simulated arrival. Each
aggregation is one "round" of the metrics, with ``sim_time``.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from murmura.aggregate.buffer import UpdateBuffer
from murmura.client import Client
from murmura.compress.accounting import downlink_counts, round_bytes, uplink_counts
from murmura.engine.run_loop import History, RoundCallback, evaluates, is_final, run_simulation
from murmura.errors import ConfigError, UpdateRejected
from murmura.sim.executor import Executor
from murmura.sim.runtime import Simulation
from murmura.simtime.arrival import AsyncRule, stale_reason, weighted_update
from murmura.simtime.availability import INF, next_start
from murmura.simtime.clock import SimClock
from murmura.strategy.base import Strategy
from murmura.strategy.hooks import budget_metrics
from murmura.types import Failure, FitIns, FitRes, RoundMetrics, Vector
from murmura.validation import Check, validate

log = logging.getLogger(__name__)
DISPATCH_STREAM = 0xA5C
WAKE = ""
"""The queue's entry for "a slot is free and a client comes online": no node."""


@dataclass(slots=True)
class _Flight:
    """A dispatched client: the model version it got and when it started."""

    version: int
    start: float


class AsyncSimulation(Simulation):
    """The event-queue run loop; validation, aggregation and evaluation are the round code's."""

    def __init__(
        self,
        strategy: Strategy,
        clients: Sequence[Client],
        initial_weights: Vector,
        *,
        clock: SimClock,
        rule: AsyncRule,
        seed: int,
        executor: Executor | None = None,
        checks: Sequence[Check] | None = None,
        evaluate_every: int = 1,
        max_weight_share: float | None = None,
    ) -> None:
        super().__init__(
            strategy,
            clients,
            initial_weights,
            executor=executor,
            checks=checks,
            evaluate_every=evaluate_every,
            max_weight_share=max_weight_share,
        )
        self.clock, self.rule = clock, rule
        self.rng = np.random.default_rng([seed, DISPATCH_STREAM])
        self._loop: _Loop | None = None

    def run(self, rounds: int, on_round: RoundCallback | None = None, start: int = 1) -> History:
        """Aggregations ``start..rounds``; ``on_round`` sees each one's metrics and weights."""
        self._loop = _Loop(self, start - 1)
        return run_simulation(self, rounds, on_round, start, _budget_spent)

    def run_round(self, round_: int, final: bool = False) -> RoundMetrics:
        """Aggregation ``round_``: events until the buffer is full, then the strategy's rule."""
        if self._loop is None or self._loop.version + 1 != round_:
            raise ValueError(f"aggregation {round_} is not the next of this run")
        return self._loop.next_aggregation(final)


def _budget_spent(round_: int) -> None:
    log.warning("aggregation %d would exceed the budget: stopping", round_)


class _Loop:
    """The state of one run: the event queue, the clients in flight, the buffer."""

    def __init__(self, sim: AsyncSimulation, version: int) -> None:
        self.sim, self.version = sim, version
        self.models: dict[int, Vector] = {version: sim.weights}
        self.flights: dict[str, _Flight] = {}
        self.results: dict[str, FitRes | BaseException] = {}
        self.queue: list[tuple[float, int, str, bool]] = []  # (time, seq, node, offline)
        self.seq = 0
        self.fits = 0
        self.entries: list[tuple[str, Vector, FitRes, int]] = []
        self.failures: list[Failure] = []
        self.started = sim.clock.now
        self.wake_at = INF
        self.wall = time.perf_counter()

    def next_aggregation(self, final: bool) -> RoundMetrics:
        """Run events until the buffer is full, then aggregate it as round ``version + 1``."""
        sim, clock = self.sim, self.sim.clock
        self._fill()
        while len(self.entries) < sim.rule.buffer_size:
            if not self.queue:
                idle = [n for n in sim.clients if n not in self.flights]
                t = next_start(clock.availability, idle, clock.now + 1e-9)
                if t == INF:
                    raise ConfigError(
                        f"clock: no client is reachable after {clock.now:.1f} s (the "
                        "availability trace ended) and the buffer is not full"
                    )
                clock.now = t
                self._fill()
                continue
            t, _, node, offline = heapq.heappop(self.queue)
            clock.now = t
            if node == WAKE:
                self.wake_at = INF
                self._fill()
                continue
            self._arrive(node, offline)
            if len(self.entries) < sim.rule.buffer_size:  # else the new model goes out next
                self._fill()
        return self._aggregate(final)

    def _fill(self) -> None:
        """Dispatch the current model to idle reachable clients until every slot is taken."""
        sim, clock = self.sim, self.sim.clock
        free = sim.rule.concurrency - len(self.flights)
        if free <= 0:
            return
        idle = [n for n in sim.clients if n not in self.flights]
        up = clock.available(idle)
        if len(up) < free:  # wake when the next idle client comes online, to fill the slot
            t = next_start(clock.availability, [n for n in idle if n not in up], clock.now)
            if t < self.wake_at:
                self.wake_at = t
                self._push(t, WAKE, offline=False)
        if not up:
            return
        idle = up
        chosen = self.sim.rng.choice(len(idle), size=min(free, len(idle)), replace=False)
        batch = [idle[i] for i in sorted(chosen.tolist())]
        for node in batch:
            self.flights[node] = _Flight(self.version, clock.now)
        self._train(batch)
        for node in batch:
            self._schedule(node, self.flights[node])

    def _push(self, t: float, node: str, offline: bool) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, node, offline))

    def _arrive(self, node: str, offline: bool) -> None:
        """A node's result arrives, or the node went offline before sending it."""
        flight = self.flights.pop(node)
        outcome = self.results.pop(node)
        if offline:
            why = f"went offline at {self.sim.clock.now:.1f} s before finishing"
            self.failures.append(Failure(node, f"client raised Straggler: {why}"))
        else:
            self._accept_async(node, flight, outcome)
        self._release_model(flight.version)

    def _schedule(self, node: str, flight: _Flight) -> None:
        """Queue the trained node's arrival, or its going offline first."""
        outcome = self.results[node]
        if isinstance(outcome, BaseException):
            self._push(flight.start, node, offline=False)
            return
        done, offline = self.sim.clock.finish(node, flight.start, outcome)
        self._push(min(done, offline), node, offline=done > offline)

    def _train(self, batch: Sequence[str]) -> None:
        """Train the clients dispatched together with the current model, in one batch."""
        self.fits += 1
        sim = self.sim
        weights = self.models[self.version]
        ins = FitIns(self.fits, weights, sim.strategy.configure(self.fits, weights))
        for node, outcome in sim.executor.fit([sim.clients[n] for n in batch], ins):
            self.results[node] = outcome

    def _release_model(self, version: int) -> None:
        if version != self.version and all(f.version != version for f in self.flights.values()):
            self.models.pop(version, None)

    def _accept_async(self, node: str, flight: _Flight, outcome: FitRes | BaseException) -> None:
        """Refuse a failed, too stale or invalid update; else buffer it, scaled."""
        sim, rule = self.sim, self.sim.rule
        if isinstance(outcome, BaseException):
            why = f"client raised {type(outcome).__name__}: {outcome}"
            self.failures.append(Failure(node, why))
            return
        tau = self.version - flight.version
        stale = stale_reason(tau, rule.max_staleness)
        if stale is not None:
            self.failures.append(Failure(node, stale))
            return
        try:
            validate(node, self.version + 1, outcome, sim.checks)
        except UpdateRejected as exc:
            self.failures.append(Failure(node, f"rejected: {exc.reason}"))
            return
        delta = outcome.update
        if rule.algorithm == "fedasync":  # the local model's difference to the current one
            delta = self.models[flight.version] + delta - sim.weights
        scaled = weighted_update(rule, tau, delta)
        self.entries.append((node, scaled, outcome, tau))

    def _aggregate(self, final: bool) -> RoundMetrics:
        """The buffer through the strategy's aggregation: one round of the metrics."""
        sim, r = self.sim, self.version + 1
        keep_rows = sim.strategy.keep_rows or sim.observer is not None
        buffer = UpdateBuffer(len(self.entries), sim.weights.size, keep_rows, sim.max_weight_share)
        for node, scaled, res, _ in self.entries:
            buffer.add(node, scaled, res.num_examples, res.metrics)
        failures, taus = self.failures, [tau for *_, tau in self.entries]
        new = sim.strategy.aggregate(r, sim.weights, buffer, failures)
        if new is not None:
            sim.weights = new
        self.version = r
        self.models[r] = sim.weights
        self._release_model(r - 1)
        metrics = RoundMetrics(r, participants=len(buffer), failures=list(failures))
        d = sim.weights.size
        downs = downlink_counts(buffer.metrics, d, len(buffer))
        metrics.extra.update(round_bytes(uplink_counts(buffer.metrics, d), downs))
        metrics.extra.update(
            sim_time=sim.clock.now,
            round_sim_seconds=sim.clock.now - self.started,
            staleness_mean=float(np.mean(taus)) if taus else 0.0,
            staleness_max=max(taus, default=0),
        )
        metrics.extra.update(budget_metrics(sim.strategy, r))
        metrics.train_loss = buffer.mean_metric("train_loss")
        if evaluates(r, sim.evaluate_every, is_final(r, final, sim.stops)):
            sim.evaluate_round(r, list(sim.clients), metrics)  # the star's, central then federated
        metrics.seconds = time.perf_counter() - self.wall
        self.entries, self.failures, self.started = [], [], sim.clock.now
        self.wall = time.perf_counter()
        return metrics
