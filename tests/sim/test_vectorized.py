"""The vectorised executor equals sequential training; "auto" picks it only when it may."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from murmura.client import FlatModel, LocalSGD, TorchClient
from murmura.config import config_from_dict
from murmura.data.federated import ArrayFederatedDataset
from murmura.sim import step_plan, vectorized
from murmura.sim.builder import build_experiment
from murmura.sim.choose import choose_executor, why_not_vectorized
from murmura.sim.executor import SequentialExecutor
from murmura.sim.runtime import Simulation
from murmura.sim.vectorized import VectorizedExecutor
from murmura.tasks import DigitsTask, SyntheticTask
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

ATOL = 2e-5


def digits_clients(hp: LocalSGD, n: int = 12, sizes: list[int] | None = None) -> list[TorchClient]:
    task = DigitsTask(hidden=16)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 64)).astype(np.float32)
    y = rng.integers(0, 10, 400).astype(np.int64)
    sizes = sizes or [int(s) for s in rng.integers(1, 40, n)]
    cuts = np.cumsum([0, *sizes])
    parts = [np.arange(cuts[i], cuts[i + 1]) for i in range(len(sizes))]
    data = ArrayFederatedDataset(x, y, parts, x[:10], y[:10])
    torch.manual_seed(0)
    model = FlatModel(task.build_model())
    return [TorchClient(c, data, task, model, hp, seed=3) for c in range(len(sizes))]


def synthetic_clients(hp: LocalSGD, n: int = 10) -> list[TorchClient]:
    task = SyntheticTask()
    data = task.federate(n, "natural", {}, seed=0)
    torch.manual_seed(0)
    model = FlatModel(task.build_model())
    return [TorchClient(c, data, task, model, hp, seed=0) for c in range(n)]


def run_both(
    clients: list[TorchClient], ins: FitIns, ex: VectorizedExecutor | None = None
) -> tuple[dict[str, FitRes], dict[str, FitRes]]:
    seq = dict(SequentialExecutor().fit(clients, ins))
    vec = dict((ex or VectorizedExecutor()).fit(clients, ins))
    assert list(vec) == [c.node_id for c in clients]
    return seq, vec  # type: ignore[return-value]


def assert_same(seq: dict[str, FitRes], vec: dict[str, FitRes]) -> None:
    for node, s in seq.items():
        v = vec[node]
        np.testing.assert_allclose(v.update, s.update, atol=ATOL, rtol=1e-4, err_msg=node)
        assert v.num_examples == s.num_examples
        assert v.metrics["train_loss"] == pytest.approx(s.metrics["train_loss"], abs=1e-5)


@pytest.mark.parametrize(
    "hp",
    [
        LocalSGD(epochs=3, batch_size=8, lr=0.05),
        LocalSGD(epochs=2, batch_size=5, lr=0.05, momentum=0.9),
        LocalSGD(epochs=2, batch_size=7, lr=0.05, weight_decay=0.01, proximal_mu=0.1),
    ],
    ids=["sgd", "momentum", "wd+prox"],
)
@pytest.mark.parametrize("cost", [0.0, 3.0, 1e9], ids=["all-vmapped", "default", "all-plain"])
def test_digits_equals_sequential(hp: LocalSGD, cost: float) -> None:
    clients = digits_clients(hp)
    w = clients[0].model.get()
    seq, vec = run_both(clients, FitIns(2, w, {}), VectorizedExecutor(vmap_cost=cost))
    assert_same(seq, vec)


def test_synthetic_equals_sequential_with_config_override() -> None:
    clients = synthetic_clients(LocalSGD(epochs=1, batch_size=10, lr=0.01))
    w = clients[0].model.get()
    seq, vec = run_both(clients, FitIns(1, w, {"lr": 0.02, "momentum": 0.5}))
    assert_same(seq, vec)


def test_empty_client_and_chunks() -> None:
    clients = digits_clients(LocalSGD(epochs=2, batch_size=4, lr=0.05), sizes=[5, 0, 9, 1, 17])
    w = clients[0].model.get()
    w0 = w.copy()
    seq, vec = run_both(clients, FitIns(1, w, {}), VectorizedExecutor(memory_budget=1))
    np.testing.assert_array_equal(w, w0)  # the global weights are never trained in place
    assert_same(seq, vec)
    assert not vec["client-1"].update.any()
    assert vec["client-1"].num_examples == 0


def test_batch_schedule_matches_randperm() -> None:
    hp = LocalSGD(epochs=2, batch_size=4)
    table = step_plan.batch_schedule(6, hp, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    p1, p2 = torch.randperm(6, generator=g), torch.randperm(6, generator=g)
    assert table.tolist() == [p1[:4].tolist(), [*p1[4:].tolist(), -1, -1]] + [
        p2[:4].tolist(),
        [*p2[4:].tolist(), -1, -1],
    ]


class Wrapper:
    """A non-plain client: doubles its inner client's update, or fails."""

    def __init__(self, inner: TorchClient, fail: bool = False) -> None:
        self.inner, self.fail, self.node_id = inner, fail, inner.node_id

    def fit(self, ins: FitIns) -> FitRes:
        if self.fail:
            raise RuntimeError("boom")
        res = self.inner.fit(ins)
        return FitRes(res.update * 2, res.num_examples, res.metrics)

    def evaluate(self, weights: Vector) -> EvaluateRes:
        return self.inner.evaluate(weights)


def test_wrapped_clients_run_their_own_fit_in_cohort_order() -> None:
    clients = digits_clients(LocalSGD(epochs=1, batch_size=8, lr=0.05), n=5)
    cohort = [clients[0], Wrapper(clients[1]), clients[2], Wrapper(clients[3], fail=True)]
    ins = FitIns(1, clients[0].model.get(), {})
    out = list(VectorizedExecutor().fit(cohort, ins))  # type: ignore[arg-type]
    assert [n for n, _ in out] == ["client-0", "client-1", "client-2", "client-3"]
    res = dict(out)
    honest = clients[1].fit(ins)
    np.testing.assert_allclose(res["client-1"].update, honest.update * 2, atol=1e-6)  # type: ignore[union-attr]
    assert isinstance(res["client-3"], RuntimeError)
    assert isinstance(res["client-0"], FitRes)


def test_failed_vectorised_pass_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no vmap today")

    monkeypatch.setattr(vectorized, "fit_vectorized", broken)
    clients = digits_clients(LocalSGD(epochs=1, batch_size=8, lr=0.05), n=3)
    ins = FitIns(1, clients[0].model.get(), {})
    with caplog.at_level(logging.WARNING):
        seq, vec = run_both(clients, ins)
    assert "one by one" in caplog.text
    assert_same(seq, vec)


class BatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.bn = nn.Linear(64, 10), nn.BatchNorm1d(10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(x))  # type: ignore[no-any-return]


class BranchyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(x)
        return out if out.sum() > 0 else -out  # data-dependent control flow


@pytest.mark.parametrize(
    ("module", "reason"),
    [
        (BatchNormNet(), "buffers"),
        (BranchyNet(), "dry run failed"),
        (nn.Sequential(nn.Linear(64, 10), nn.Dropout(0.5)), "dry run failed"),
    ],
)
def test_auto_refuses_what_vmap_cannot_do(module: nn.Module, reason: str) -> None:
    clients = digits_clients(LocalSGD(), n=2)
    model = FlatModel(module)
    why = why_not_vectorized(model, clients[0].task, clients)
    assert why is not None and reason in why


def test_auto_chooses_vectorized_for_digits_and_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    clients = digits_clients(LocalSGD(), n=3)
    cfg = config_from_dict({"simulation": {"executor": "auto"}})
    with caplog.at_level(logging.INFO, logger="murmura.sim.choose"):
        ex = choose_executor(cfg, clients[0].model, clients[0].task, clients)
        assert isinstance(ex, VectorizedExecutor)
        seq = choose_executor(cfg, clients[0].model, clients[0].task, [Wrapper(clients[0])])
        assert isinstance(seq, SequentialExecutor)
    assert "executor: vectorized" in caplog.text
    assert "executor: sequential (auto: not every client is a plain TorchClient)" in caplog.text


def test_simulation_rounds_match_sequential() -> None:
    base = {
        "run": {"rounds": 2},
        "partition": {"kind": "dirichlet", "num_clients": 20},
        "client": {"epochs": 2, "batch_size": 16, "lr": 0.05},
        "strategy": {"fraction": 0.5},
    }
    runs = {}
    for kind in ("sequential", "auto"):
        cfg = config_from_dict({**base, "simulation": {"executor": kind}})
        exp = build_experiment(cfg)
        runs[kind] = exp.simulation.run(2)
    assert isinstance(build_experiment(cfg).simulation.executor, VectorizedExecutor)  # type: ignore[union-attr]
    np.testing.assert_allclose(runs["auto"].weights, runs["sequential"].weights, atol=ATOL)


class SmoothedDigits(DigitsTask):
    """Not plain cross-entropy: the vectorised loss must take the generic per-sample path."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs, targets, label_smoothing=0.1)


def test_generic_loss_path_equals_sequential() -> None:
    clients = digits_clients(LocalSGD(epochs=2, batch_size=8, lr=0.05), n=6)
    task = SmoothedDigits(hidden=16)
    for c in clients:
        c.task = task
    ex = VectorizedExecutor()
    seq, vec = run_both(clients, FitIns(1, clients[0].model.get(), {}), ex)
    assert_same(seq, vec)
    assert ex.trainer(clients[0].model, task)._cross_entropy is False


@pytest.mark.parametrize("attack", ["sign_flip", "label_flip"])
def test_attacks_work_on_the_vectorized_executor(attack: str) -> None:
    base = {
        "partition": {"kind": "dirichlet", "num_clients": 10},
        "client": {"epochs": 1, "batch_size": 16, "lr": 0.05},
        "attack": {"kind": attack, "fraction": 0.3},
    }
    out = {}
    for kind in ("sequential", "vectorized"):
        sim = build_experiment(config_from_dict({**base, "simulation": {"executor": kind}}))
        assert isinstance(sim.simulation, Simulation)
        out[kind] = sim.simulation.run(2).weights
        if kind == "vectorized":
            assert isinstance(sim.simulation.executor, VectorizedExecutor)
    np.testing.assert_allclose(out["vectorized"], out["sequential"], atol=ATOL)


def test_clients_per_pass_counts_parameters_and_activations() -> None:
    assert vectorized.clients_per_pass(512 * 2**20, 4810, 16, 64) >= 1000  # W1: one pass
    small_model_big_inputs = vectorized.clients_per_pass(512 * 2**20, 10_000, 32, 3 * 32 * 32)
    assert 1 <= small_model_big_inputs < 200
    assert vectorized.clients_per_pass(1, 10**7, 32, 10) == 1


def test_ray_missing_is_a_config_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from murmura.errors import ConfigError
    from murmura.sim import ray_executor

    def no_ray(name: str) -> None:
        raise ImportError(name)

    monkeypatch.setattr(importlib, "import_module", no_ray)
    with pytest.raises(ConfigError, match=r"murmura\[ray\]"):
        ray_executor.import_ray()
