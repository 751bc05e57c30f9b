from typing import Any

import pytest

from murmura.config import config_from_dict
from murmura.sim.builder import build_experiment

BASE: dict[str, Any] = {
    "run": {"rounds": 3, "seed": 1},
    "partition": {"kind": "iid", "num_clients": 8},
    "client": {"epochs": 1, "batch_size": 16, "lr": 0.1},
    "simulation": {"executor": "sequential"},
    "evaluation": {"every": 0},
    "strategy": {"min_clients": 2, "fraction": 0.5},
    "privacy": {"mode": "central", "noise_multiplier": 0.5, "clip_norm": 1.0},
}
FEDBUFF = {"enabled": True, "mode": "async", "buffer_size": 4, "concurrency": 6}


def test_central_dp_with_fedbuff_charges_the_accountant_once_per_buffer() -> None:
    fedbuff = build_experiment(config_from_dict({**BASE, "clock": FEDBUFF})).simulation.run(3)
    sync = build_experiment(config_from_dict(BASE)).simulation.run(3)
    eps = [m.extra["epsilon"] for m in fedbuff.rounds]
    assert eps == pytest.approx([m.extra["epsilon"] for m in sync.rounds])
    assert eps[0] < eps[1] < eps[2]  # type: ignore[operator]
    assert [m.participants for m in fedbuff.rounds] == [4, 4, 4]


def test_a_robust_rule_runs_per_buffer() -> None:
    data = {
        **BASE,
        "privacy": {},
        "strategy": {
            "min_clients": 2,
            "aggregator": "trimmed_mean",
            "aggregator_args": {"beta": 0.25},
        },
        "clock": FEDBUFF,
    }
    history = build_experiment(config_from_dict(data)).simulation.run(3)
    assert [m.participants for m in history.rounds] == [4, 4, 4]
    assert history.rounds[-1].test_accuracy is not None
    assert history.rounds[-1].test_accuracy > 0.5
