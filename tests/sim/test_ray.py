"""The Ray executor on a local Ray instance equals sequential training (skipped without Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from murmura.config import Config, config_from_dict
from murmura.sim.builder import build_experiment
from murmura.sim.executor import SequentialExecutor
from murmura.sim.runtime import Simulation
from murmura.types import FitIns, FitRes

ray = pytest.importorskip("ray", reason="Ray is the optional extra murmura[ray]; not installed")
pytestmark = pytest.mark.slow


def config(executor: str) -> Config:
    return config_from_dict(
        {
            "partition": {"kind": "dirichlet", "num_clients": 8},
            "client": {"epochs": 2, "batch_size": 16, "lr": 0.05},
            "simulation": {"executor": executor, "workers": 2, "num_cpus_per_client": 1},
        }
    )


def test_ray_executor_equals_sequential() -> None:
    from murmura.sim.ray_executor import RayExecutor

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        sim = build_experiment(config("sequential")).simulation
        assert isinstance(sim, Simulation)
        cohort = list(sim.clients.values())
        ins = FitIns(1, sim.weights, {})
        ex = RayExecutor(config("ray"), workers=2)
        got = list(ex.fit(cohort, ins))
        assert [n for n, _ in got] == [c.node_id for c in cohort]
        want = dict(SequentialExecutor().fit(cohort, ins))
        for node, res in got:
            assert isinstance(res, FitRes)
            np.testing.assert_allclose(res.update, want[node].update, atol=2e-5)  # type: ignore[union-attr]
        ex.close()
    finally:
        ray.shutdown()
