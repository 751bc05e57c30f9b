"""Synchronous rounds in simulated time: availability, over-selection, deadline, stragglers.

``TimedSampling`` wraps the strategy: it samples among the clients reachable when the round
starts (waiting until enough are) and over-selects ``over_selection`` times the cohort; it
adds ``sim_time`` to the round's metrics. ``TimedExecutor`` wraps the executor: it times each
result on the clock and keeps the first ``keep`` that finish before the deadline; the others
are failures (``Straggler``) with the reason. The round code and the strategies are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from murmura.client import Client
from murmura.sim.executor import Executor, Outcome
from murmura.sim.runtime import RoundReporter
from murmura.simtime.clock import SimClock, Straggler
from murmura.strategy.base import Strategy, Wrapper
from murmura.types import FitIns, FitRes, RoundMetrics

SAMPLE_STREAM = 0x0C10


class TimedSampling(Wrapper):
    """Samples ``ceil(over_selection * keep)`` of the reachable clients; reports the time.

    A round starts when at least ``minimum`` clients are reachable; the cohort is then at most
    the reachable ones.

    With every client always reachable and no over-selection it is the inner strategy's own
    sample (so central DP's Poisson sampling holds); otherwise a seeded uniform draw.
    """

    def __init__(
        self,
        inner: Strategy,
        clock: SimClock,
        executor: TimedExecutor,
        *,
        keep: int,
        over_selection: float,
        own_draw: bool,
        seed: int,
        minimum: int = 1,
    ) -> None:
        super().__init__(inner)
        self.clock, self.executor = clock, executor
        self.keep, self.draw = keep, math.ceil(over_selection * keep)
        self.own_draw, self.seed, self.minimum = own_draw, seed, minimum

    def sample(self, round_: int, nodes: Sequence[str]) -> list[str]:
        """A draw among the nodes reachable now (the clock waits until ``minimum`` are)."""
        up = self.clock.wait_for(nodes, min(self.minimum, len(nodes)))
        if not self.own_draw:
            return self.inner.sample(round_, up)
        k = min(self.draw, len(up))
        rng = np.random.default_rng([self.seed, SAMPLE_STREAM, round_])
        return [up[i] for i in np.sort(rng.choice(len(up), size=k, replace=False))]

    def report(self, round_: int, metrics: RoundMetrics) -> None:
        """The inner report, then ``sim_time`` (seconds at the round's end) and its length."""
        if isinstance(self.inner, RoundReporter):
            self.inner.report(round_, metrics)
        metrics.extra.update(self.executor.last)


class TimedExecutor:
    """Runs ``inner``; keeps the first ``keep`` results to finish by the deadline."""

    def __init__(
        self, inner: Executor, clock: SimClock, *, keep: int, deadline: float | None
    ) -> None:
        self.inner, self.clock, self.keep, self.deadline = inner, clock, keep, deadline
        self.last: dict[str, object] = {}

    def fit(self, cohort: Sequence[Client], ins: FitIns) -> Iterator[Outcome]:
        """Yield the kept results, then every late or offline client as a ``Straggler``."""
        start = self.clock.now
        cutoff = start + self.deadline if self.deadline is not None else math.inf
        timed: list[tuple[float, str, FitRes]] = []
        lost: list[tuple[float, str, BaseException]] = []
        for node, out in self.inner.fit(cohort, ins):
            if isinstance(out, BaseException):
                lost.append((start, node, out))
                continue
            done, offline = self.clock.finish(node, start, out)
            if done > offline:
                took = done - start
                why = f"went offline {offline - start:.1f} s into the round, {took:.1f} s needed"
                lost.append((offline, node, Straggler(why)))
            else:
                timed.append((done, node, out))
        timed.sort(key=lambda x: (x[0], x[1]))
        kept = [x for x in timed if x[0] <= cutoff][: self.keep]
        ends = [t for t, _, _ in timed] + [t for t, _, _ in lost]
        end = kept[-1][0] if len(kept) == self.keep else min(cutoff, max(ends, default=start))
        late = [x for x in timed if x not in kept]
        self.clock.now = end
        self.last = {
            "sim_time": end,
            "round_sim_seconds": end - start,
            "stragglers": len(late) + sum(isinstance(e, Straggler) for _, _, e in lost),
        }
        for _, node, res in kept:
            yield node, res
        for done, node, _ in late:
            where = (
                f"past the deadline {self.deadline} s"
                if done > cutoff
                else (f"after the first {self.keep} of {len(cohort)}")
            )
            yield node, Straggler(f"would finish {done - start:.1f} s into the round, {where}")
        for _, node, exc in lost:
            yield node, exc
