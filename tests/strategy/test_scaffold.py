"""SCAFFOLD: the control variates follow Karimireddy et al. 2020 (option II), and it trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from murmura.client import TorchClient
from murmura.config import config_from_dict
from murmura.errors import ConfigError, ProtocolError
from murmura.sim.builder import build_experiment
from murmura.strategy import Scaffold, ScaffoldClient
from murmura.strategy.scaffold import CONFIG_KEY, decode_vector, encode_vector
from murmura.types import FitIns


def _config(**strategy: object) -> dict[str, object]:
    return {
        "run": {"seed": 0, "rounds": 6},
        "partition": {"kind": "dirichlet", "num_clients": 6, "alpha": 0.5},
        "client": {"epochs": 1, "batch_size": 16, "lr": 0.05},
        "strategy": {"name": "scaffold", **strategy},
    }


def test_control_variate_travels_as_base64_float32() -> None:
    v = np.array([1.5, -2.0, 3.25], np.float32)
    np.testing.assert_array_equal(decode_vector(encode_vector(v), 3), v)
    with pytest.raises(ProtocolError, match="12 bytes, expected 16"):
        decode_vector(encode_vector(v), 4)
    with pytest.raises(ProtocolError, match="base64"):
        decode_vector("not base64!", 3)


def test_client_step_uses_correction_and_option_two() -> None:
    """One full-batch step: y = x - lr (g - c_i + c); c_i+ = c_i - c + (x - y) / (K lr)."""
    exp = build_experiment(config_from_dict(_config()))
    sim = exp.simulation
    client = sim.clients["client-0"]
    assert isinstance(client, ScaffoldClient)
    plain: TorchClient = client.inner
    n = plain.data.client_size(0)
    plain.hp = type(plain.hp)(epochs=1, batch_size=n, lr=0.05)  # K = 1
    rng = np.random.default_rng(0)
    c, c_i = (rng.normal(0, 0.01, sim.weights.size).astype(np.float32) for _ in range(2))
    client.c_i = c_i.copy()
    x = sim.weights
    res = client.fit(FitIns(1, x, {CONFIG_KEY: encode_vector(c)}))
    base = plain.fit(FitIns(1, x, {}))  # the same batch without correction: -lr * g
    assert res.metrics["scaffold_steps"] == 1.0
    np.testing.assert_allclose(res.update, base.update - 0.05 * (c - c_i), atol=1e-6)
    assert client.c_i is not None
    np.testing.assert_allclose(client.c_i, c_i - c - res.update / 0.05, rtol=1e-5, atol=1e-5)


def test_server_variate_is_c_plus_mean_client_change_over_n() -> None:
    """c <- c + (|S| / N) * mean_{i in S}(c_i+ - c_i), over a real round with |S| = 3 of 6."""
    exp = build_experiment(config_from_dict(_config(fraction=0.5)))
    sim, strategy = exp.simulation, exp.simulation.strategy
    assert isinstance(strategy, Scaffold)
    for round_ in (1, 2):
        clients = {k: v for k, v in sim.clients.items() if isinstance(v, ScaffoldClient)}
        before = {k: None if c.c_i is None else c.c_i.copy() for k, c in clients.items()}
        c_old = np.zeros(sim.weights.size) if strategy.c is None else strategy.c.copy()
        sim.run_round(round_)
        changed = [
            c.c_i - (np.zeros_like(c.c_i) if before[k] is None else before[k])
            for k, c in clients.items()
            if c.c_i is not None and (before[k] is None or not np.array_equal(before[k], c.c_i))
        ]
        assert len(changed) == 3
        assert strategy.c is not None
        np.testing.assert_allclose(strategy.c, c_old + np.sum(changed, axis=0) / 6, atol=1e-6)


def test_scaffold_trains_digits() -> None:
    torch.set_num_threads(1)
    exp = build_experiment(config_from_dict(_config()))
    history = exp.simulation.run(6)
    accuracy = history.rounds[-1].test_accuracy
    assert accuracy is not None and accuracy > 0.8


def test_state_round_trip_and_kind_check() -> None:
    s = Scaffold()
    s.c = np.arange(3, dtype=np.float32)
    t = Scaffold()
    t.load_state_dict(s.state_dict())
    assert t.c is not None
    np.testing.assert_array_equal(t.c, s.c)
    with pytest.raises(ConfigError, match="kind"):
        t.load_state_dict({"kind": "adam", "m": None})


def test_momentum_is_refused() -> None:
    exp = build_experiment(config_from_dict({**_config(), "client": {"momentum": 0.9}}))
    client = exp.simulation.clients["client-0"]
    with pytest.raises(ConfigError, match="plain SGD"):
        client.fit(
            FitIns(
                1,
                exp.simulation.weights,
                exp.simulation.strategy.configure(1, exp.simulation.weights),
            )
        )
