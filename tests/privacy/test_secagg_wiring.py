"""Secure aggregation wired into runs: [secagg] config, SecureAggregation, refusals, dropouts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from murmura.aggregate.buffer import UpdateBuffer
from murmura.config import config_from_dict, load_config
from murmura.errors import ConfigError
from murmura.privacy.secagg import Stage
from murmura.sim.builder import build_experiment
from murmura.sim.runtime import History, Simulation
from murmura.strategy import FedAvg
from murmura.strategy.secure import SecAggParams, SecureAggregation
from murmura.types import RoundMetrics

N, CLIP, MEDIAN = 10, 4.0, "coordinate_median"


def _config(secagg: dict[str, Any] | None, **sections: dict[str, Any]) -> dict[str, Any]:
    """A small digits run: 10 iid clients, 1 epoch, 3 rounds, evaluation after the last."""
    base: dict[str, Any] = {
        "run": {"rounds": 3, "seed": 5},
        "task": {"name": "digits"},
        "partition": {"kind": "iid", "num_clients": N},
        "client": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        "strategy": {"fraction": 1.0, "min_clients": 2},
        "evaluation": {"every": 0},
        "simulation": {"executor": "sequential"},
    }
    if secagg is not None:
        base["secagg"] = {"enabled": True, "clip": CLIP, **secagg}
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return base


def _simulation(data: dict[str, Any]) -> Simulation:
    sim = build_experiment(config_from_dict(data)).simulation
    assert isinstance(sim, Simulation)
    return sim


def _run(data: dict[str, Any]) -> History:
    return _simulation(data).run(int(data["run"]["rounds"]))


def _quantisation_bound(n: int, clip: float, max_weight: float, total_weight: float) -> float:
    """Largest error of one round's weighted mean (see ``Quantizer``): n units of 1/s each."""
    scale = (2**31 - 1 - n) / (n * clip * max_weight)
    return 2 * n / scale / total_weight  # numerator and denominator each off by <= n units


def test_secagg_run_equals_fedavg_up_to_quantisation_and_is_deterministic() -> None:
    plain = _run(_config(None))
    secure = _run(_config({}))
    again = _run(_config({}))
    # Same seed, fresh keys: masks differ, the unmasked integer sum and rounding do not.
    assert np.array_equal(secure.weights, again.weights)
    # Digits: 1437 training examples over 10 clients, the largest about 150; one round's
    # quantisation error is at most 4e-8 per coordinate, the size of float32 rounding of the
    # weights (~1e-7 relative; observed: 3e-8, one ulp); 1e-6 leaves room for three rounds.
    assert _quantisation_bound(N, CLIP, 150.0, 1437.0) < 4e-8
    np.testing.assert_allclose(secure.weights, plain.weights, rtol=0, atol=1e-6)
    assert secure.rounds[-1].test_accuracy == pytest.approx(plain.rounds[-1].test_accuracy)
    for m in secure.rounds:
        assert m.participants == N and not m.failures
        assert m.extra["secagg_survivors"] == N and m.extra["secagg_aborted"] is False
        assert isinstance(m.extra["secagg_bytes_per_client"], float)
        assert m.extra["secagg_bytes_per_client"] > 4 * secure.weights.size


@pytest.mark.parametrize("weight_cap", [None, 250.0])
def test_secagg_with_central_dp_equals_dp_up_to_quantisation(weight_cap: float | None) -> None:
    privacy = {"mode": "central", "clip_norm": 0.5, "noise_multiplier": 1.0}
    if weight_cap is not None:
        privacy["weight_cap"] = weight_cap
    strategy = {"fraction": 0.6}
    plain = _run(_config(None, privacy=privacy, strategy=strategy))
    secure = _run(_config({"clip": None}, privacy=privacy, strategy=strategy))
    # Same Poisson cohorts and noise; the clipped sum differs by quantisation only
    # (clip = C = 0.5, weights at most 1: under 1e-8 per coordinate and round).
    np.testing.assert_allclose(secure.weights, plain.weights, rtol=0, atol=1e-6)
    for p, s in zip(plain.rounds, secure.rounds, strict=True):
        assert s.extra["epsilon"] == p.extra["epsilon"]
        assert s.extra["dp_clip_norm"] == 0.5
        assert s.participants == p.participants


@pytest.mark.parametrize(
    ("section", "values", "keys"),
    [
        ("strategy", {"aggregator": MEDIAN}, ["secagg.enabled", "strategy.aggregator", MEDIAN]),
        ("strategy", {"aggregator": "krum", "aggregator_args": {"f": 1}}, ["strategy.aggregator"]),
        ("anomaly", {"enabled": True}, ["secagg.enabled", "anomaly.enabled"]),
        ("strategy", {"name": "scaffold"}, ["secagg.enabled", "strategy.name"]),
        ("topology", {"kind": "ring"}, ["secagg.enabled", "topology.kind"]),
    ],
)
def test_secagg_with_a_rule_needing_individual_updates_is_refused_at_load(
    section: str, values: dict[str, Any], keys: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(_config({}, **{section: values}))
    message = str(err.value)
    assert all(k in message for k in keys), message
    assert "only ever sees the sum" in message or "topology" in section


def test_secagg_keys_are_validated() -> None:
    with pytest.raises(ConfigError, match="dropout"):
        config_from_dict(_config({"dropout": {"unmask": 1.5}}))
    with pytest.raises(ConfigError, match="secagg.dropout.*advertise"):
        config_from_dict(_config({"dropout": {"sharing": 0.1}}))
    with pytest.raises(ConfigError, match="secagg.neighbours must be even"):
        config_from_dict(_config({"neighbours": 3}))


def _buffer(rows: np.ndarray, examples: list[int]) -> UpdateBuffer:
    buffer = UpdateBuffer(len(rows), rows.shape[1])
    for i, (row, count) in enumerate(zip(rows, examples, strict=True)):
        buffer.add(f"n{i}", row, count, {})
    return buffer


@dataclass
class _Outcome:
    weights: np.ndarray
    rows: np.ndarray
    examples: np.ndarray
    new: np.ndarray | None
    metrics: RoundMetrics


def _round(dropout: dict[Stage, float]) -> _Outcome:
    """One secure FedAvg round on 10 random rows, as the runtime would drive it."""
    rng = np.random.default_rng(0)
    rows = rng.normal(0, 0.1, size=(N, 50)).astype(np.float32)
    examples = rng.integers(10, 100, size=N)
    weights = rng.normal(size=50).astype(np.float32)
    strategy = SecureAggregation(FedAvg(min_clients=2), SecAggParams(dropout=dropout, seed=1))
    new = strategy.aggregate(1, weights, _buffer(rows, [int(x) for x in examples]), [])
    metrics = RoundMetrics(1, participants=N)
    strategy.report(1, metrics)
    return _Outcome(weights, rows, examples, new, metrics)


def test_dropouts_within_threshold_give_the_survivors_weighted_mean() -> None:
    out = _round({Stage.MASKED_INPUT: 0.2, Stage.UNMASK: 0.1})
    failed = {f.node for f in out.metrics.failures}
    assert len(failed) == 2
    assert all("masked_input (simulated)" in f.reason for f in out.metrics.failures)
    keep = [i for i in range(N) if f"n{i}" not in failed]
    w = out.examples[keep].astype(np.float64)
    expected = out.weights + (w @ out.rows[keep].astype(np.float64)) / w.sum()
    assert out.new is not None
    np.testing.assert_allclose(out.new, expected, rtol=0, atol=1e-6)
    assert out.metrics.participants == N - 2
    assert out.metrics.extra["secagg_survivors"] == N - 2


def test_dropouts_below_threshold_abort_and_leave_the_model_unchanged() -> None:
    # k = 8, t = 5 for 10 clients: 6 dropouts leave every neighbourhood with at most 4.
    out = _round({Stage.MASKED_INPUT: 0.6})
    metrics = out.metrics
    assert out.new is None
    assert metrics.extra["secagg_aborted"] is True and metrics.participants == 0
    assert metrics.extra["secagg_abort_stage"] == "masked_input"
    assert len(metrics.failures) == 6
    assert all("round aborted" in f.reason for f in metrics.failures)


def test_an_aborted_round_in_a_run_keeps_the_model_bitwise_and_the_run_goes_on() -> None:
    sim = _simulation(_config({"dropout": {"share": 0.7}}, run={"rounds": 2}))
    before = sim.weights.copy()
    history = sim.run(2)
    assert np.array_equal(history.weights, before)
    assert [m.extra["secagg_aborted"] for m in history.rounds] == [True, True]
    assert all(len(m.failures) == 7 for m in history.rounds)
    assert history.rounds[-1].test_accuracy is not None


def test_an_aborted_round_under_central_dp_still_spends_the_budget() -> None:
    privacy = {"mode": "central", "clip_norm": 0.5, "noise_multiplier": 1.0}
    sim = _simulation(_config({"dropout": {"share": 0.9}}, privacy=privacy))
    before = sim.weights.copy()
    history = sim.run(3)
    assert np.array_equal(history.weights, before)
    epsilons = [float(str(m.extra["epsilon"])) for m in history.rounds]
    assert all(m.extra["secagg_aborted"] for m in history.rounds)
    assert epsilons == sorted(epsilons) and len(set(epsilons)) == 3


def test_the_example_config_loads() -> None:
    cfg = load_config(Path(__file__).parents[2] / "examples" / "digits-secagg.toml")
    assert cfg.secagg.enabled and cfg.strategy.aggregator == "weighted_mean"


def test_secagg_composes_with_fedadam_server_optimiser() -> None:
    strategy = {"name": "fedadam", "server_lr": 0.01}
    plain = _run(_config(None, strategy=strategy, run={"rounds": 2}))
    secure = _run(_config({}, strategy=strategy, run={"rounds": 2}))
    # Adam divides by sqrt(v) + tau: a 4e-8 difference in the delta stays below 1e-6.
    np.testing.assert_allclose(secure.weights, plain.weights, rtol=0, atol=1e-6)
    assert not np.array_equal(plain.weights, _simulation(_config(None)).weights)  # it trained
