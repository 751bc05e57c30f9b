"""``[strategy] normalize_steps`` where it applies (the star's server, each tree edge) and
where it is refused at load time (peers, secure aggregation, DP, SCAFFOLD, async)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.sim.builder import build_experiment

BASE: dict[str, Any] = {
    "run": {"name": "nova", "rounds": 2, "seed": 3},
    "task": {"name": "digits"},
    "partition": {"kind": "quantity", "num_clients": 4},
    "client": {"epochs": 1, "batch_size": 32, "lr": 0.1},
    "strategy": {"name": "fedavg", "min_clients": 1, "aggregator": "coordinate_median"},
    "evaluation": {"every": 0},
}


def config(**tables: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE)
    for name, values in tables.items():
        cfg[name] = {**cfg.get(name, {}), **values}
    return cfg


def final_model(cfg: dict[str, Any]) -> tuple[np.ndarray, list[Any]]:
    sim = build_experiment(config_from_dict(cfg)).simulation
    history = sim.run(2)
    return np.asarray(sim.weights), [m.extra.get("tau_eff") for m in history.rounds]


def test_a_one_edge_tree_normalises_as_the_star_does() -> None:
    nova = {"aggregator": "coordinate_median", "normalize_steps": True}
    star, taus = final_model(config(strategy=nova))
    tree, _ = final_model(config(strategy=nova, topology={"kind": "tree", "edges": 1}))
    plain, _ = final_model(config())
    np.testing.assert_allclose(tree, star, rtol=0, atol=1e-6)
    assert all(t is not None and t > 1 for t in taus)  # the clients took unequal steps
    assert np.abs(star - plain).max() > 1e-4  # and the normalisation changed the model


@pytest.mark.parametrize(
    ("tables", "words"),
    [
        ({"topology": {"kind": "ring", "args": {"n": 4}}}, "peer-to-peer"),
        ({"secagg": {"enabled": True}}, "secagg.enabled"),
        (
            {"privacy": {"mode": "central", "noise_multiplier": 0.5, "clip_norm": 1.0}},
            "privacy.mode",
        ),
        ({"privacy": {"mode": "local", "noise_multiplier": 0.5, "clip_norm": 1.0}}, "local"),
        ({"strategy": {"name": "scaffold"}}, "scaffold"),
        ({"clock": {"enabled": True, "mode": "async", "buffer_size": 2}}, "async"),
    ],
)
def test_normalize_steps_is_refused_where_no_role_can_honour_it(
    tables: dict[str, dict[str, Any]], words: str
) -> None:
    cfg = config(**tables)
    strategy = {**cfg["strategy"], "normalize_steps": True}
    if "topology" in tables or "secagg" in tables or "privacy" in tables:
        strategy["aggregator"] = "weighted_mean"
    cfg["strategy"] = strategy
    with pytest.raises(ConfigError, match="strategy.normalize_steps") as err:
        config_from_dict(cfg)
    assert words in str(err.value)
    assert "\n" not in str(err.value)
