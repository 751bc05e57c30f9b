"""Anomaly scores against the aggregate, flagging after k rounds in a row, exclusion."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from murmura.aggregate import make_aggregator
from murmura.aggregate.buffer import UpdateBuffer
from murmura.config import config_from_dict
from murmura.sim.runtime import Simulation
from murmura.strategy import STRATEGIES
from murmura.strategy.anomaly import (
    AnomalyMonitor,
    Flagging,
    anomaly_scores,
    crossed,
    kept_by_rule,
)
from murmura.types import EvaluateRes, FitIns, FitRes, Vector


class Fixed:
    """A client that always returns the same update."""

    def __init__(self, node_id: str, update: list[float]) -> None:
        self.node_id, self.update = node_id, np.asarray(update, np.float32)

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(self.update.copy(), 10)

    def evaluate(self, weights: Vector) -> EvaluateRes:
        return EvaluateRes(0.0, 10)


def test_scores_match_hand_computation() -> None:
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 0.0]], np.float32)
    s = anomaly_scores(rows, np.array([1.0, 0.0], np.float32))
    np.testing.assert_allclose(s["l2"], [0.0, np.sqrt(2), 2.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(s["cosine"], [1.0, 0.0, -1.0, 0.0])
    np.testing.assert_allclose(s["norm"], [1.0, 1.0, 1.0, 0.0])
    assert crossed("cosine", s, 0.5).tolist() == [False, True, True, True]
    assert crossed("l2", s, 1.5).tolist() == [False, False, True, False]


@given(arrays(np.float32, (6, 4), elements=st.floats(-10, 10, width=32)), st.randoms())
@settings(max_examples=30, deadline=None)
def test_scores_do_not_depend_on_client_order(rows: np.ndarray, rnd: object) -> None:
    ref = rows.mean(axis=0)
    perm = np.random.default_rng(0).permutation(6)
    a, b = anomaly_scores(rows, ref), anomaly_scores(rows[perm], ref)
    for key in a:
        np.testing.assert_allclose(a[key][perm], b[key], rtol=1e-9, atol=1e-9)


def test_krum_selection_is_reported() -> None:
    rows = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [50.0, 50.0]], np.float32)
    kept = kept_by_rule(make_aggregator("multi_krum", f=1), rows, rows[:4].mean(0))
    assert kept is not None and kept.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]
    trim = kept_by_rule(make_aggregator("trimmed_mean", beta=0.2), rows, rows[0])
    assert trim is not None and trim[4] == 0.0


def test_flagged_after_k_rounds_in_a_row_then_excluded() -> None:
    monitor = AnomalyMonitor("cosine", threshold=0.0, rounds=2, exclude=True)
    clients = [Fixed(f"h{i}", [1.0, 1.0 + 0.1 * i]) for i in range(4)] + [Fixed("x", [-2.0, -2.0])]
    sim = Simulation(STRATEGIES.get("fedavg")(), clients, np.zeros(2, np.float32), observer=monitor)
    first = sim.run_round(1)
    scores = first.extra["anomaly"]
    assert isinstance(scores, dict) and set(scores) == {"h0", "h1", "h2", "h3", "x"}
    assert scores["x"]["cosine"] < 0 < scores["h0"]["cosine"]
    assert first.extra["flagged"] == []
    assert sim.run_round(2).extra["flagged"] == ["x"]
    third = sim.run_round(3)
    assert third.participants == 4 and "x" not in third.extra["anomaly"]  # type: ignore[operator]


def test_streak_resets_and_state_round_trips() -> None:
    m = AnomalyMonitor("norm", threshold=1.0, rounds=2)
    buf = UpdateBuffer(1, 1)
    fedavg = STRATEGIES.get("fedavg")()
    for value in (2.0, 0.5, 2.0):
        buf = UpdateBuffer(1, 1)
        buf.add("a", np.array([value], np.float32), 1, {})
        m.observe(1, np.zeros(1, np.float32), buf, fedavg)
    assert m.flagged == set() and m.streaks == {"a": 1}
    other = AnomalyMonitor()
    other.load_state_dict(m.state_dict())
    assert other.streaks == {"a": 1}


def test_anomaly_section_reaches_the_simulation() -> None:
    from murmura.sim.builder import build_experiment

    cfg = config_from_dict(
        {"partition": {"num_clients": 4}, "anomaly": {"enabled": True, "rounds": 1}}
    )
    sim = build_experiment(cfg).simulation
    assert isinstance(sim, Simulation) and isinstance(sim.strategy, Flagging)
    assert sim.strategy.monitor.rounds == 1  # a strategy wrapper: the coordinator runs it too
