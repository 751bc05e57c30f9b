"""Backdoor defences: weak DP (Sun et al. 2019), FLAME (Nguyen et al. 2022) and FoolsGold
(Fung et al. 2020) on hand-made honest and sybil updates (issue 17)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from murmura.aggregate import (
    FoolsGold,
    flame,
    foolsgold_credibility,
    make_aggregator,
    norm_bounding,
    weak_dp,
)
from murmura.aggregate.buffer import UpdateBuffer
from murmura.aggregate.flame import flame_admitted
from murmura.aggregate.preaggregation import arc, strategy_rule
from murmura.config import config_from_dict
from murmura.errors import AggregationError, ConfigError
from murmura.node.checkpoint import restore_strategy_state, strategy_state
from murmura.strategy import STRATEGIES
from murmura.strategy.fedavg import FedAvgWithRuleState

D = 50


def honest_and_sybils(seed: int, honest: int, sybils: int) -> tuple[np.ndarray, np.ndarray]:
    """Honest updates: a shared direction plus client-specific parts; sybils: one poison."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(D)
    good = shared + 1.5 * rng.standard_normal((honest, D))
    poison = rng.standard_normal(D)
    bad = poison + 0.01 * rng.standard_normal((sybils, D))
    return good.astype(np.float32), bad.astype(np.float32)


def test_weak_dp_is_norm_bounding_plus_seeded_noise_of_the_given_scale() -> None:
    x = np.random.default_rng(0).standard_normal((6, 20_000)).astype(np.float32) * 3
    w = np.arange(1, 7, dtype=np.float32)
    bounded = norm_bounding(x, w, bound=2.0)
    np.testing.assert_array_equal(weak_dp(x, w, bound=2.0, sigma=0.0), bounded)
    noisy = weak_dp(x, w, bound=2.0, sigma=0.025, seed=3)
    assert np.std(noisy - bounded) == pytest.approx(0.025, rel=0.03)
    np.testing.assert_array_equal(noisy, weak_dp(x, w, bound=2.0, sigma=0.025, seed=3))
    assert not np.array_equal(noisy, weak_dp(x, w, bound=2.0, sigma=0.025, seed=4))
    assert not np.array_equal(noisy, weak_dp(x[::-1], w, bound=2.0, sigma=0.025, seed=3))
    with pytest.raises(AggregationError, match="sigma"):
        make_aggregator("weak_dp", sigma=-1.0)


def test_flame_drops_the_sybil_cluster_and_clips_to_the_median_norm() -> None:
    good, bad = honest_and_sybils(1, honest=7, sybils=3)
    x = np.vstack([good, 20 * bad])  # scaled poison: model replacement style
    w = np.ones(10, np.float32)
    admitted = flame_admitted(x)
    assert not admitted[7:].any()  # the sybils
    assert admitted[:7].sum() >= 6  # a majority cluster: n // 2 + 1 = 6 (here one honest outlier)
    out = flame(x, w, lam=1e-9)  # noise negligible: check the clipped mean itself
    norms = np.linalg.norm(x, axis=1)
    s = np.median(norms)
    want = np.mean([g * min(1.0, s / np.linalg.norm(g)) for g in x[admitted]], axis=0)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
    poison = bad.mean(axis=0) / np.linalg.norm(bad.mean(axis=0))
    assert abs(float(out @ poison)) < 0.5 * abs(float(np.mean(x, axis=0) @ poison))


def test_flame_adds_noise_scaled_by_the_median_norm() -> None:
    x = np.random.default_rng(2).standard_normal((9, 40_000)).astype(np.float32)
    w = np.ones(9, np.float32)
    s = float(np.median(np.linalg.norm(x, axis=1)))
    quiet, loud = flame(x, w, lam=1e-9), flame(x, w, lam=0.01)
    assert np.std(loud - quiet) == pytest.approx(0.01 * s, rel=0.03)


def test_foolsgold_scores_identical_sybils_zero_and_diverse_clients_high() -> None:
    good, bad = honest_and_sybils(3, honest=6, sybils=3)
    alpha = foolsgold_credibility(np.vstack([good, bad]))
    assert (alpha[6:] == 0).all()
    assert (alpha[:6] > 0.5).all()


def test_foolsgold_remembers_sybils_that_hide_in_one_round() -> None:
    # each round the sybils add independent noise to their shared poison: one round's
    # similarities barely single them out, their summed histories do
    rng = np.random.default_rng(4)
    poison = rng.standard_normal(D)
    nodes = [f"h{i}" for i in range(6)] + ["s0", "s1", "s2"]
    rule = FoolsGold()
    w = np.ones(9, np.float32)
    for _ in range(8):
        honest = rng.standard_normal((6, D))
        sybil = 0.6 * poison + rng.standard_normal((3, D))
        x = np.vstack([honest, sybil]).astype(np.float32)
        one_round = foolsgold_credibility(x)
        out = rule.aggregate_clients(nodes, x, w)
    history = foolsgold_credibility(np.stack([rule.history[n] for n in nodes]))
    assert history[6:].max() < 0.05 and history[:6].min() > 0.5
    assert one_round[6:].min() > 0.1  # a single round did not find them
    sybil_part = np.abs(out @ poison) / np.linalg.norm(poison)
    assert sybil_part < 0.2 * np.linalg.norm(x[6:].mean(axis=0) @ poison) / np.linalg.norm(poison)


def test_foolsgold_state_is_checkpointed_by_the_strategy() -> None:
    good, bad = honest_and_sybils(5, honest=4, sybils=2)
    x = np.vstack([good, bad])
    strategy = STRATEGIES.get("fedavg")(aggregator=make_aggregator("foolsgold"))
    assert isinstance(strategy, FedAvgWithRuleState)
    buf = UpdateBuffer(6, D)
    for i, row in enumerate(x):
        buf.add(f"n{i}", row, 10, {})
    strategy.aggregate(1, np.zeros(D, np.float32), buf, [])
    saved = strategy_state(strategy)
    assert saved is not None
    fresh = STRATEGIES.get("fedavg")(aggregator=make_aggregator("foolsgold"))
    restore_strategy_state(fresh, saved, "ckpt")
    np.testing.assert_array_equal(fresh.aggregator.history["n3"], x[3])  # type: ignore[attr-defined]
    assert strategy.combine(buf).tolist() == fresh.combine(buf).tolist()
    with pytest.raises(ValueError, match="not a FoolsGold state"):
        FoolsGold().load_state_dict({"kind": "adam"})


def config(strategy: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
    return {"partition": {"num_clients": 8}, "strategy": strategy, **sections}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (config({"name": "fedadam", "aggregator": "foolsgold"}), "does not checkpoint"),
        (
            config({}, topology={"kind": "ring", "robust": "foolsgold"}),
            "not applied by a P2P peer",
        ),
        (
            config({"aggregator": "foolsgold", "pre_aggregation": "nnm"}),
            "the average of its nearest rows",
        ),
        (
            config({"aggregator": "foolsgold", "pre_aggregation": "bucketing"}),
            "the average of a random bucket of 2 rows",
        ),
    ],
)
def test_foolsgold_where_its_history_cannot_be_kept_is_refused(
    data: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict(data)


def test_foolsgold_behind_arc_keeps_each_clients_history_and_its_checkpoint() -> None:
    good, bad = honest_and_sybils(6, honest=6, sybils=3)
    x = np.vstack([good, bad * 50])  # loud sybils: ARC clips them, FoolsGold zeroes them
    cfg = config_from_dict(config({"aggregator": "foolsgold", "pre_aggregation": "arc"}))
    strategy = STRATEGIES.get("fedavg")(aggregator=strategy_rule(cfg.strategy))
    assert isinstance(strategy, FedAvgWithRuleState)
    buf = UpdateBuffer(9, D)
    for i, row in enumerate(x):
        buf.add(f"n{i}", row, 10, {})
    delta = strategy.combine(buf)
    clipped, _ = arc(x, np.full(9, 10, np.float32), 0.2)
    np.testing.assert_allclose(strategy.rule().state_dict()["history"][7], clipped[7])  # type: ignore[index]
    alpha = foolsgold_credibility(clipped)
    assert (alpha[6:] == 0).all()
    np.testing.assert_allclose(delta, FoolsGold.combine(alpha, clipped, np.ones(9)), atol=1e-6)
    fresh = STRATEGIES.get("fedavg")(aggregator=strategy_rule(cfg.strategy))
    restore_strategy_state(fresh, strategy_state(strategy), "ckpt")  # type: ignore[arg-type]
    assert fresh.combine(buf).tolist() == strategy.combine(buf).tolist()
