"""The run loop's rules: which rounds run, are final, are evaluated and are checkpointed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from murmura.engine.run_loop import (
    checkpoint_due,
    evaluates,
    is_final,
    never_stops,
    planned_rounds,
    run_simulation,
)
from murmura.types import RoundMetrics, Vector


@given(st.integers(1, 500), st.integers(0, 50), st.booleans())
def test_evaluates_every_k_rounds_and_the_final_one(round_: int, every: int, final: bool) -> None:
    expected = final or (every > 0 and round_ % every == 0)
    assert evaluates(round_, every, final) is expected


def test_evaluation_cadence_over_a_run() -> None:
    rounds = 10
    done = [r for r, last in planned_rounds(1, rounds, never_stops) if evaluates(r, 3, last)]
    assert done == [3, 6, 9, 10]
    assert [r for r, last in planned_rounds(1, rounds, never_stops) if evaluates(r, 0, last)] == [
        10
    ]


def test_checkpoint_cadence() -> None:
    assert [r for r in range(1, 11) if checkpoint_due(r, 4)] == [4, 8]
    assert [r for r in range(1, 11) if checkpoint_due(r, 4, r == 10)] == [4, 8, 10]
    assert not any(checkpoint_due(r, 0, True) for r in range(1, 11))  # 0: never


def test_a_budget_stop_ends_the_run_before_the_round_and_makes_the_previous_final() -> None:
    stops = lambda r: r >= 5  # noqa: E731 - round 5 would take the budget past its target
    told: list[int] = []
    got = list(planned_rounds(2, 9, stops, told.append))
    assert got == [(2, False), (3, False), (4, False)]
    assert told == [5]
    assert [r for r, last in got if is_final(r, last, stops)] == [4]
    assert is_final(9, True, never_stops) and not is_final(8, False, never_stops)


class Counter:
    """A run whose model is the number of rounds run so far; the budget allows ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit, self.done, self.finals = limit, 0, []

    def run_round(self, round_: int, final: bool = False) -> RoundMetrics:
        self.done += 1
        if is_final(round_, final, self.stops):
            self.finals.append(round_)
        return RoundMetrics(round_, participants=1)

    def stops(self, round_: int) -> bool:
        return round_ > self.limit

    def model(self) -> Vector:
        return np.full(2, self.done, dtype=np.float32)


@pytest.mark.parametrize(
    ("limit", "start", "ran", "final"), [(99, 1, 6, 6), (4, 1, 4, 4), (4, 3, 2, 4)]
)
def test_run_simulation_reports_every_round_and_the_model(
    limit: int, start: int, ran: int, final: int
) -> None:
    sim = Counter(limit)
    seen: list[tuple[int, float]] = []
    history = run_simulation(sim, 6, lambda m, w: seen.append((m.round, float(w[0]))), start)
    assert [m.round for m in history.rounds] == list(range(start, start + ran))
    assert seen == [(start + i, float(i + 1)) for i in range(ran)]
    assert history.weights.tolist() == [ran, ran]
    assert sim.finals == [final]
