import logging

import numpy as np
import pytest

from murmura.config import config_from_dict
from murmura.sim.builder import build_experiment
from murmura.sim.runtime import Simulation
from murmura.strategy import FedAvg
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

SMALL = {
    "run": {"rounds": 3, "seed": 1},
    "partition": {"kind": "iid", "num_clients": 8},
    "client": {"epochs": 1, "batch_size": 16, "lr": 0.1},
    "strategy": {"min_clients": 2},
    "simulation": {"executor": "sequential"},
}


class Raising:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def fit(self, ins: FitIns) -> FitRes:
        raise RuntimeError("disk on fire")

    def evaluate(self, weights: Vector) -> EvaluateRes:
        raise RuntimeError("disk on fire")


class Returning:
    def __init__(self, node_id: str, update: object, num_examples: int = 10) -> None:
        self.node_id, self.update, self.num_examples = node_id, update, num_examples

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(update=self.update, num_examples=self.num_examples)  # type: ignore[arg-type]

    def evaluate(self, weights: Vector) -> EvaluateRes:
        return EvaluateRes(0.0, 0)


def test_small_digits_run_learns() -> None:
    exp = build_experiment(config_from_dict({**SMALL, "run": {"rounds": 5, "seed": 1}}))
    history = exp.simulation.run(5)
    accs = [m.test_accuracy for m in history.rounds]
    assert accs[-1] is not None and accs[-1] > 0.8
    assert all(m.participants == 8 and not m.failures for m in history.rounds)
    assert history.rounds[-1].train_loss < history.rounds[0].train_loss  # type: ignore[operator]


def test_same_config_and_seed_give_bit_identical_weights() -> None:
    a = build_experiment(config_from_dict(SMALL)).simulation.run(3).weights
    b = build_experiment(config_from_dict(SMALL)).simulation.run(3).weights
    c = (
        build_experiment(config_from_dict({**SMALL, "run": {"rounds": 3, "seed": 2}}))
        .simulation.run(3)
        .weights
    )
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_faulty_clients_are_listed_with_reasons_and_the_round_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exp = build_experiment(config_from_dict(SMALL))
    honest = list(exp.simulation.clients.values())
    d = exp.model.layout.size
    bad = [
        Raising("raiser"),
        Returning("nan", np.full(d, np.nan, np.float32)),
        Returning("inf", np.full(d, np.inf, np.float32)),
        Returning("short", np.zeros(d - 1, np.float32)),
        Returning("float64", np.zeros(d, np.float64)),
        Returning("negative-count", np.zeros(d, np.float32), num_examples=-5),
    ]
    sim = Simulation(exp.simulation.strategy, [*honest, *bad], exp.simulation.weights)
    with caplog.at_level(logging.WARNING):
        m = sim.run_round(1)
    reasons = {f.node: f.reason for f in m.failures}
    assert set(reasons) == {"raiser", "nan", "inf", "short", "float64", "negative-count"}
    assert "RuntimeError: disk on fire" in reasons["raiser"]
    assert "non-finite" in reasons["nan"] and "non-finite" in reasons["inf"]
    assert f"expected ({d},)" in reasons["short"]
    assert "float32" in reasons["float64"]
    assert "num_examples" in reasons["negative-count"]
    assert m.participants == len(honest)
    assert np.isfinite(sim.weights).all()
    assert "node 'nan' in round 1 rejected" in caplog.text
    assert m.to_json()["failures"][0] == {"node": "raiser", "reason": reasons["raiser"]}


def test_too_few_results_keep_the_model_bitwise_unchanged() -> None:
    exp = build_experiment(config_from_dict(SMALL))
    honest = next(iter(exp.simulation.clients.values()))
    d = exp.model.layout.size
    strategy = FedAvg(min_clients=3)
    clients = [honest, Raising("r1"), Returning("bad", np.full(d, np.nan, np.float32))]
    start = exp.simulation.weights.copy()
    sim = Simulation(strategy, clients, start)
    m = sim.run_round(1)
    assert m.participants == 1 and len(m.failures) == 2
    assert sim.weights.tobytes() == start.tobytes()


def test_aggregate_is_the_examples_weighted_mean_of_deltas() -> None:
    d = 4
    clients = [
        Returning("a", np.array([1, 0, 0, 0], np.float32), num_examples=1),
        Returning("b", np.array([0, 3, 0, 0], np.float32), num_examples=3),
    ]
    sim = Simulation(FedAvg(), clients, np.ones(d, np.float32))
    sim.run_round(1)
    np.testing.assert_allclose(sim.weights, [1.25, 3.25, 1, 1])


def test_evaluation_every_k_rounds_and_always_the_last() -> None:
    cfg = config_from_dict({**SMALL, "evaluation": {"every": 2}, "run": {"rounds": 3, "seed": 1}})
    rounds = build_experiment(cfg).simulation.run(3).rounds
    assert [m.test_accuracy is not None for m in rounds] == [False, True, True]


def test_sampling_is_seeded_and_respects_fraction_and_min_clients() -> None:
    nodes = [f"n{i}" for i in range(50)]
    s = FedAvg(fraction=0.1, min_clients=2, seed=3)
    first = s.sample(1, nodes)
    assert len(first) == 5 and first == s.sample(1, nodes) and first != s.sample(2, nodes)
    assert len(FedAvg(fraction=0.01, min_clients=4).sample(1, nodes)) == 4
