"""The run loop: which rounds run, when a run stops early, and which rounds are evaluated.

Written once for every runtime: the simulated star, tree and asynchronous runs, simulated
peer-to-peer, the deployed coordinator (and, for the evaluation cadence, a deployed peer).

- Rounds ``start..rounds`` run in order; before each, ``stops(round)`` (a privacy budget that
  this round would take past its target, ``murmura.strategy.hooks.budget_stops``) ends the run
  after the previous one.
- A round is *final* when it is the last planned one or when the next one would stop: the
  last round run is always evaluated.
- A round is evaluated when it is final or a multiple of ``[evaluation] every`` (0: only the
  final one).
- A checkpoint is due every ``checkpoint_every`` rounds (0: never) and, when asked, at the
  final round or a requested stop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from murmura.types import EvaluateRes, RoundMetrics, Vector

log = logging.getLogger(__name__)
StopRule = Callable[[int], bool]
"""Whether running round ``r`` would exceed the run's privacy budget."""
RoundCallback = Callable[[RoundMetrics, Vector], None]


def never_stops(round_: int) -> bool:
    """The stop rule of a run without a privacy budget."""
    return False


def is_final(round_: int, last: bool, stops: StopRule) -> bool:
    """Whether ``round_`` (``last``: the last planned) ends the run, or the next would stop.

    Asked after the round's aggregation, which is when a privacy budget is spent.
    """
    return last or stops(round_ + 1)


def evaluates(round_: int, every: int, final: bool) -> bool:
    """Whether ``round_`` is evaluated: every ``every`` rounds (0: none) and the final one."""
    return final or (every > 0 and round_ % every == 0)


def record_evaluation(metrics: RoundMetrics, ev: EvaluateRes) -> None:
    """Put a central evaluation into the round's metrics.

    Loss, accuracy and every other metric (a backdoor's ``attack_success_rate``), the same in the
    simulation and the coordinator.
    """
    metrics.test_loss, metrics.test_accuracy = ev.loss, ev.metrics.get("accuracy")
    metrics.extra.update({k: v for k, v in ev.metrics.items() if k != "accuracy"})


def checkpoint_due(round_: int, every: int, also: bool = False) -> bool:
    """Whether ``round_`` is checkpointed: every ``every`` rounds (0: never), and when ``also``."""
    return every > 0 and (round_ % every == 0 or also)


def planned_rounds(
    start: int, rounds: int, stops: StopRule, on_stop: Callable[[int], None] | None = None
) -> Iterator[tuple[int, bool]]:
    """``(round, last planned)`` for ``start..rounds``, ending before a round that ``stops``.

    ``on_stop(round)`` tells the operator why the run ends early (the default logs it).
    """
    for r in range(start, rounds + 1):
        if stops(r):
            if on_stop is None:
                log.warning("round %d would exceed the budget: stopping after round %d", r, r - 1)
            else:
                on_stop(r)
            return
        yield r, r == rounds


class RoundRunner(Protocol):
    """A simulated run: one round at a time, its stop rule, and the model it reports."""

    def run_round(self, round_: int, final: bool = False) -> RoundMetrics:
        """Run round ``round_`` (``final``: the last planned one, evaluated)."""
        ...

    def stops(self, round_: int) -> bool:
        """Whether running ``round_`` would exceed the privacy budget."""
        ...

    def model(self) -> Vector:
        """The model the run reports after each round (the global one, or the peers' mean)."""
        ...


@dataclass(slots=True)
class History:
    """The outcome of a run: the final weights and one ``RoundMetrics`` per round."""

    weights: Vector
    rounds: list[RoundMetrics] = field(default_factory=list)


def run_simulation(
    sim: RoundRunner,
    rounds: int,
    on_round: RoundCallback | None = None,
    start: int = 1,
    on_stop: Callable[[int], None] | None = None,
) -> History:
    """Run rounds ``start..rounds`` of ``sim``; ``on_round`` sees each round's metrics and model.

    ``on_round`` is where a session logs the metrics line, prints the round and checkpoints.
    """
    history = History(sim.model())
    for r, last in planned_rounds(start, rounds, sim.stops, on_stop):
        metrics = sim.run_round(r, final=last)
        history.rounds.append(metrics)
        if on_round is not None:
            on_round(metrics, sim.model())
    history.weights = sim.model()
    return history
