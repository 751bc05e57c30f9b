from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import torch

from murmura.aggregate import make_aggregator
from murmura.client import Client, FlatModel, LocalSGD, TorchClient
from murmura.config import config_from_dict
from murmura.engine.edge_round import EdgeRoundFailed
from murmura.sim.builder import build_experiment
from murmura.sim.executor import Outcome, SequentialExecutor
from murmura.sim.hierarchical import EdgeAggregator, build_edges, split_clients
from murmura.sim.runtime import Simulation
from murmura.sim.tree_executor import TreeExecutor
from murmura.sim.vectorized import VectorizedExecutor
from murmura.strategy import FedAvg, Strategy
from murmura.tasks import DigitsTask
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

ROUNDS = 3


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models: extra intra-op threads only fight the other processes on a shared box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _clients(num: int = 20) -> tuple[list[Client], Vector]:
    task = DigitsTask()
    data = task.federate(num, "dirichlet", {"alpha": 0.5}, seed=0)
    torch.manual_seed(0)
    model = FlatModel(task.build_model())
    hp = LocalSGD(epochs=1, batch_size=16, lr=0.05)
    return [TorchClient(c, data, task, model, hp, seed=0) for c in range(num)], model.get()


class Fixed:
    """FedAvg that trains exactly the nodes it is told to, round by round."""

    def __init__(self, schedule: dict[int, list[str]]) -> None:
        self.schedule, self.inner = schedule, FedAvg()
        self.keep_rows = False

    def sample(self, round_: int, nodes: Sequence[str]) -> list[str]:
        return [n for n in nodes if n in self.schedule[round_]]

    def configure(self, round_: int, weights: Vector) -> dict[str, Any]:
        return {}

    def aggregate(self, round_: int, weights: Vector, updates: Any, failures: Any) -> Vector | None:
        return self.inner.aggregate(round_, weights, updates, failures)

    def evaluate(self, round_: int, weights: Vector) -> EvaluateRes | None:
        return None


def test_two_level_fedavg_equals_flat_fedavg() -> None:
    clients, w0 = _clients()
    flat = Simulation(FedAvg(), clients, w0).run(ROUNDS)
    edges = build_edges(split_clients(clients, 3), lambda e, n: FedAvg(seed=e))
    tree = Simulation(FedAvg(), edges, w0).run(ROUNDS)
    assert [len(e.children) for e in edges] == [7, 7, 6]
    assert np.abs(tree.weights - flat.weights).max() < 1e-6
    for f, t in zip(flat.rounds, tree.rounds, strict=True):
        assert t.train_loss == pytest.approx(f.train_loss, rel=1e-6)
    # three levels: root -> 2 regional edges -> 3 edges each -> clients
    leaves = build_edges(split_clients(clients, 6), lambda e, n: FedAvg(seed=e))
    regions = build_edges([leaves[:3], leaves[3:]], lambda e, n: FedAvg(seed=10 + e))
    deep = Simulation(FedAvg(), regions, w0).run(ROUNDS)
    assert np.abs(deep.weights - flat.weights).max() < 1e-6


def test_two_level_fedavg_equals_flat_on_the_same_sampled_clients() -> None:
    clients, w0 = _clients()
    edges = build_edges(split_clients(clients, 4), lambda e, n: FedAvg(fraction=0.4, seed=e))
    sim = Simulation(FedAvg(), edges, w0)
    schedule: dict[int, list[str]] = {}
    for r in range(1, ROUNDS + 1):
        sim.run_round(r)
        schedule[r] = [n for e in edges for n in e.last_sampled]
    assert all(len(v) == 8 for v in schedule.values())  # 2 of 5 children on each of 4 edges
    assert schedule[1] != schedule[2]
    flat = Simulation(Fixed(schedule), clients, w0).run(ROUNDS)
    assert np.abs(sim.weights - flat.weights).max() < 1e-6


class Broken:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def fit(self, ins: FitIns) -> FitRes:
        raise RuntimeError("disk full")

    def evaluate(self, weights: Vector) -> EvaluateRes:
        raise RuntimeError("disk full")


class Constant:
    def __init__(self, node_id: str, value: float, n: int = 10) -> None:
        self.node_id, self.value, self.n = node_id, value, n

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(np.full_like(ins.weights, self.value), self.n, {"train_loss": self.value})

    def evaluate(self, weights: Vector) -> EvaluateRes:
        return EvaluateRes(self.value, self.n, {"accuracy": 0.5})


def test_edge_skips_failed_children_and_fails_when_none_are_left() -> None:
    w0 = np.zeros(4, np.float32)
    edge = EdgeAggregator(
        "edge-1", [Constant("a", 1.0), Broken("b"), Constant("c", 3.0, 30)], FedAvg()
    )
    res = edge.fit(FitIns(1, w0))
    assert np.allclose(res.update, 2.5) and res.num_examples == 40
    assert res.metrics["child_failures"] == 1 and [f.node for f in edge.last_failures] == ["b"]
    assert edge.evaluate(w0).metrics["accuracy"] == pytest.approx(0.5)
    dead = EdgeAggregator("edge-2", [Broken("d")], FedAvg())
    with pytest.raises(EdgeRoundFailed, match="edge-2"):
        dead.fit(FitIns(1, w0))
    metrics = Simulation(FedAvg(), [edge, dead], w0).run_round(1)
    assert [f.node for f in metrics.failures] == ["edge-2"]


def test_each_edge_can_use_its_own_robust_rule() -> None:
    w0 = np.zeros(4, np.float32)
    honest = [Constant(f"h{i}", 1.0) for i in range(4)]
    rules: dict[int, Strategy] = {
        1: FedAvg(aggregator=make_aggregator("coordinate_median")),
        2: FedAvg(),
    }
    groups = [[*honest[:2], Constant("evil", 1e6)], [*honest[2:], Constant("evil2", 1e6)]]
    edges = build_edges(groups, lambda e, n: rules[e])
    assert np.allclose(edges[0].fit(FitIns(1, w0)).update, 1.0)
    assert edges[1].fit(FitIns(1, w0)).update[0] > 1e5


def test_config_tree_runs_hierarchical_fedavg() -> None:
    cfg = config_from_dict(
        {
            "run": {"rounds": 2},
            "partition": {"kind": "dirichlet", "num_clients": 12},
            "client": {"epochs": 1, "batch_size": 16, "lr": 0.05},
            "strategy": {"fraction": 0.5},
            "topology": {"kind": "tree", "edges": 3},
        }
    )
    exp = build_experiment(cfg)
    assert isinstance(exp.simulation, Simulation)
    history = exp.simulation.run(cfg.run.rounds)
    assert [m.participants for m in history.rounds] == [3, 3]
    assert history.rounds[-1].test_accuracy is not None
    edges = list(exp.simulation.clients.values())
    assert all(isinstance(e, EdgeAggregator) and len(e.last_sampled) == 2 for e in edges)


def test_per_edge_secure_aggregation_matches_plain_edges() -> None:
    base = {
        "run": {"rounds": 2},
        "partition": {"kind": "iid", "num_clients": 12},
        "client": {"epochs": 1, "batch_size": 16, "lr": 0.05},
        "topology": {"kind": "tree", "edges": 2},
    }
    plain = build_experiment(config_from_dict(base)).simulation.run(2)
    secure_exp = build_experiment(config_from_dict({**base, "secagg": {"enabled": True}}))
    secure = secure_exp.simulation.run(2)
    edge = next(iter(secure_exp.simulation.clients.values()))
    assert type(edge.strategy).__name__ == "SecureAggregation"  # type: ignore[attr-defined]
    # equal up to the quantisation error of SecAgg's integer encoding
    np.testing.assert_allclose(secure.weights, plain.weights, atol=1e-5)


class Recording:
    """A real executor that records the cohort of every call it is given."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    def fit(self, cohort: Sequence[Client], ins: FitIns) -> Iterator[Outcome]:
        self.calls.append([c.node_id for c in cohort])
        return self.inner.fit(cohort, ins)  # type: ignore[no-any-return]


def _tree_config(executor: str) -> dict[str, Any]:
    return {
        "run": {"rounds": 2},
        "partition": {"kind": "dirichlet", "num_clients": 12},
        "client": {"epochs": 2, "batch_size": 16, "lr": 0.05},
        "strategy": {"fraction": 0.5},
        "topology": {"kind": "tree", "edges": 3},
        "simulation": {"executor": executor},
    }


def test_config_tree_trains_each_round_in_one_vectorised_call_equal_to_sequential() -> None:
    seq = build_experiment(config_from_dict(_tree_config("sequential"))).simulation
    auto = build_experiment(config_from_dict(_tree_config("auto"))).simulation
    assert isinstance(seq, Simulation) and isinstance(auto, Simulation)
    assert isinstance(auto.executor, TreeExecutor)
    assert isinstance(auto.executor.inner, VectorizedExecutor)  # as a flat run of W1 gets
    rec = auto.executor.inner = Recording(auto.executor.inner)
    slow, fast = seq.run(2), auto.run(2)
    edges = [e for e in auto.clients.values() if isinstance(e, EdgeAggregator)]
    # one call per round holding every edge's sampled children (2 of 4 on each of 3 edges)
    assert [len(c) for c in rec.calls] == [6, 6]
    assert rec.calls[-1] == [n for e in edges for n in e.last_sampled]
    assert np.abs(fast.weights - slow.weights).max() < 1e-6
    for s, f in zip(slow.rounds, fast.rounds, strict=True):
        assert f.participants == s.participants == 3
        assert f.train_loss == pytest.approx(s.train_loss, rel=1e-5)


def test_three_level_tree_on_the_tree_executor_equals_flat_fedavg() -> None:
    clients, w0 = _clients(12)
    flat = Simulation(FedAvg(), clients, w0).run(2)
    leaves = build_edges(split_clients(clients, 4), lambda e, n: FedAvg(seed=e))
    regions = build_edges([leaves[:2], leaves[2:]], lambda e, n: FedAvg(seed=10 + e))
    rec = Recording(VectorizedExecutor())
    deep = Simulation(FedAvg(), regions, w0, executor=TreeExecutor(rec)).run(2)
    assert [len(c) for c in rec.calls] == [12, 12]  # leaf ids repeat across levels: no mixup
    assert np.abs(deep.weights - flat.weights).max() < 1e-6


def test_tree_executor_keeps_child_and_edge_failures_to_their_own_edge() -> None:
    w0 = np.zeros(4, np.float32)
    edge = EdgeAggregator(
        "edge-1", [Constant("a", 1.0), Broken("b"), Constant("c", 3.0, 30)], FedAvg()
    )
    dead = EdgeAggregator("edge-2", [Broken("d")], FedAvg())
    loner = Constant("solo", 5.0)  # a plain client next to edges trains on the root's ins
    sim = Simulation(FedAvg(), [edge, dead, loner], w0, executor=TreeExecutor(SequentialExecutor()))
    metrics = sim.run_round(1)
    assert [f.node for f in metrics.failures] == ["edge-2"]
    assert "edge-2" in metrics.failures[0].reason
    assert [f.node for f in edge.last_failures] == ["b"] and metrics.participants == 2
    # (2.5 * 40 + 5 * 10) / 50
    assert np.allclose(sim.weights, 3.0)
