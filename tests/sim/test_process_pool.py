"""The process-pool executor equals in-process training, keeps wrappers local, survives a death."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from murmura.client import Client, TorchClient
from murmura.config import Config, config_from_dict
from murmura.sim import process_pool
from murmura.sim.builder import build_experiment
from murmura.sim.executor import SequentialExecutor
from murmura.sim.process_pool import ProcessPoolExecutor, WorkerError
from murmura.sim.runtime import Simulation
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

pytestmark = pytest.mark.slow

CONFIG = {
    "run": {"rounds": 2},
    "partition": {"kind": "dirichlet", "num_clients": 12},
    "client": {"epochs": 2, "batch_size": 16, "lr": 0.05},
    "strategy": {"fraction": 0.5},
}


def config(executor: str) -> Config:
    return config_from_dict({**CONFIG, "simulation": {"executor": executor, "workers": 2}})


def simulation(executor: str) -> Simulation:
    sim = build_experiment(config(executor)).simulation
    assert isinstance(sim, Simulation)
    return sim


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    ex = ProcessPoolExecutor(config("process"), workers=2)
    yield ex
    ex.close()


class Doubler:
    """A wrapper: must run in the coordinating process, through its own fit."""

    def __init__(self, inner: Client, fail: bool = False) -> None:
        self.inner, self.fail, self.node_id = inner, fail, inner.node_id

    def fit(self, ins: FitIns) -> FitRes:
        if self.fail:
            raise RuntimeError("boom")
        res = self.inner.fit(ins)
        return FitRes(res.update * 2, res.num_examples, res.metrics)

    def evaluate(self, weights: Vector) -> EvaluateRes:
        return self.inner.evaluate(weights)


def test_pool_equals_sequential_with_wrappers(pool: ProcessPoolExecutor) -> None:
    sim = simulation("sequential")
    clients = list(sim.clients.values())
    cohort = [*clients[:6], Doubler(clients[6]), Doubler(clients[7], fail=True)]
    ins = FitIns(3, sim.weights, {})
    out = list(pool.fit(cohort, ins))
    assert [n for n, _ in out] == [c.node_id for c in cohort]
    got = dict(out)
    want = dict(SequentialExecutor().fit(cohort, ins))
    for node in [c.node_id for c in cohort[:7]]:
        g, w = got[node], want[node]
        assert isinstance(g, FitRes) and isinstance(w, FitRes)
        np.testing.assert_allclose(g.update, w.update, atol=2e-5)
        assert g.num_examples == w.num_examples
    assert isinstance(got["client-7"], RuntimeError)


def test_dead_worker_is_replaced(pool: ProcessPoolExecutor) -> None:
    sim = simulation("sequential")
    clients = list(sim.clients.values())[:4]
    pool._workers[1].proc.kill()
    pool._workers[1].proc.join()
    out = dict(pool.fit(clients, FitIns(1, sim.weights, {})))
    assert all(isinstance(r, FitRes) for r in out.values()), out


def test_worker_reports_a_config_mismatch(pool: ProcessPoolExecutor) -> None:
    sim = simulation("sequential")
    clients = list(sim.clients.values())[:2]
    out = dict(pool.fit(clients, FitIns(1, np.zeros(7, dtype=np.float32), {})))
    assert all(isinstance(r, WorkerError) for r in out.values())


def test_simulation_on_process_pool_matches_sequential(
    pool: ProcessPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process_pool, "ProcessPoolExecutor", lambda cfg, **kw: pool)
    sim = simulation("process")
    assert sim.executor is pool
    got = sim.run(2).weights
    want = simulation("sequential").run(2).weights
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_attack_wrappers_run_beside_the_pool(pool: ProcessPoolExecutor) -> None:
    cfg = config_from_dict({**CONFIG, "attack": {"kind": "sign_flip", "fraction": 0.3}})
    sim = build_experiment(cfg).simulation
    assert isinstance(sim, Simulation)
    cohort = list(sim.clients.values())
    ins = FitIns(2, sim.weights, {})
    got = dict(pool.fit(cohort, ins))
    want = dict(SequentialExecutor().fit(cohort, ins))
    assert any(not isinstance(c, TorchClient) for c in cohort)
    for node, res in want.items():
        assert isinstance(res, FitRes)
        np.testing.assert_allclose(got[node].update, res.update, atol=2e-5)  # type: ignore[union-attr]
