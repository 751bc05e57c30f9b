"""Registering many lazily generated clients generates none of their data (W4's premise)."""

from __future__ import annotations

from murmura.config import config_from_dict
from murmura.sim.builder import build_experiment
from murmura.sim.runtime import Simulation
from murmura.sim.vectorized import VectorizedExecutor
from murmura.tasks.synthetic import SyntheticFederatedDataset


def test_100k_clients_register_without_generating_data() -> None:
    cfg = config_from_dict(
        {
            "task": {"name": "synthetic", "args": {"eval_clients": 5}},
            "partition": {"kind": "natural", "num_clients": 100_000},
            "strategy": {"fraction": 0.0001, "min_clients": 2},
        }
    )
    exp = build_experiment(cfg)
    assert isinstance(exp.data, SyntheticFederatedDataset)
    assert exp.data._client.cache_info().currsize <= 5  # the evaluation clients only
    sim = exp.simulation
    assert isinstance(sim, Simulation)
    assert isinstance(sim.executor, VectorizedExecutor)
    m = sim.run_round(1)
    assert m.participants == 10
