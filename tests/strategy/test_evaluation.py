"""Federated evaluation in the strategies: the weighted mean, sampling, wrappers, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.errors import ConfigError, UpdateRejected
from murmura.privacy.accountant import create_accountant
from murmura.privacy.budget import PrivacyBudget
from murmura.privacy.mechanisms import CentralDP
from murmura.strategy import STRATEGIES, FedAvg
from murmura.strategy.dp import Accounted, DifferentiallyPrivate
from murmura.strategy.evaluation import (
    federated_summary,
    record_federated,
    weighted_evaluation,
)
from murmura.strategy.hooks import FederatedEvaluator
from murmura.strategy.secure import SecAggParams, SecureAggregation
from murmura.types import EvaluateRes, RoundMetrics
from murmura.validation import MAX_METRICS, validate_evaluation

result = st.builds(
    EvaluateRes,
    loss=st.floats(0, 10, allow_nan=False),
    num_examples=st.integers(0, 500),
    metrics=st.fixed_dictionaries({"accuracy": st.floats(0, 1, allow_nan=False)}),
)


def test_equals_a_hand_computation() -> None:
    results = [
        EvaluateRes(1.0, 10, {"accuracy": 0.5}),
        EvaluateRes(2.0, 30, {"accuracy": 0.9, "f1": 0.7}),
        EvaluateRes(99.0, 0, {"accuracy": 0.0}),  # nothing held out: takes no part
    ]
    out = weighted_evaluation(results)
    assert out is not None
    assert out.num_examples == 40
    assert out.loss == pytest.approx((10 * 1.0 + 30 * 2.0) / 40)  # 1.75
    assert out.metrics["accuracy"] == pytest.approx((10 * 0.5 + 30 * 0.9) / 40)  # 0.8
    assert out.metrics["f1"] == pytest.approx(0.7)  # only the client that reports it
    assert weighted_evaluation([EvaluateRes(1.0, 0)]) is None
    assert weighted_evaluation([]) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(result, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_weighted_mean_and_order_invariance(results: list[EvaluateRes], rnd) -> None:  # type: ignore[no-untyped-def]
    out = weighted_evaluation(results)
    total = sum(r.num_examples for r in results)
    if total == 0:
        assert out is None
        return
    assert out is not None and out.num_examples == total
    loss = math.fsum(r.loss * r.num_examples for r in results) / total
    acc = math.fsum(r.metrics["accuracy"] * r.num_examples for r in results) / total
    assert out.loss == pytest.approx(loss, rel=1e-12, abs=1e-12)
    assert out.metrics["accuracy"] == pytest.approx(acc, rel=1e-12, abs=1e-12)
    used = [r for r in results if r.num_examples > 0]
    assert min(r.loss for r in used) - 1e-12 <= out.loss <= max(r.loss for r in used) + 1e-12
    shuffled = list(results)
    rnd.shuffle(shuffled)
    again = weighted_evaluation(shuffled)
    assert again is not None
    assert again.loss == pytest.approx(out.loss, rel=1e-12, abs=1e-15)
    assert again.metrics == pytest.approx(out.metrics, rel=1e-12, abs=1e-15)


def test_sampling_is_seeded_sized_and_apart_from_training_sampling() -> None:
    nodes = [f"n{i:02d}" for i in range(20)]
    s = FedAvg(fraction=0.5, seed=3, fraction_evaluate=0.25, min_evaluate_clients=2)
    picks = [s.sample_evaluate(r, nodes) for r in range(1, 11)]
    assert all(len(p) == 5 and p == sorted(p) and set(p) <= set(nodes) for p in picks)
    assert picks == [s.sample_evaluate(r, nodes) for r in range(1, 11)]  # reproducible
    assert len({tuple(p) for p in picks}) > 1  # changes with the round
    train = [s.sample(r, nodes) for r in range(1, 11)]
    assert any(not set(p) <= set(t) for p, t in zip(picks, train, strict=True))
    assert (
        len(FedAvg(fraction_evaluate=0.01, min_evaluate_clients=3).sample_evaluate(1, nodes)) == 3
    )
    assert FedAvg().sample_evaluate(1, nodes) == []  # off by default
    assert FedAvg(fraction_evaluate=1.0, min_evaluate_clients=21).sample_evaluate(1, nodes) == []
    with pytest.raises(ConfigError, match="fraction_evaluate"):
        FedAvg(fraction_evaluate=1.5)


def test_aggregate_needs_min_clients_with_examples() -> None:
    s = FedAvg(fraction_evaluate=1.0, min_evaluate_clients=2)
    one = [("a", EvaluateRes(1.0, 10, {"accuracy": 1.0})), ("b", EvaluateRes(5.0, 0))]
    assert s.aggregate_evaluate(1, one, []) is None
    two = [*one, ("c", EvaluateRes(3.0, 30, {"accuracy": 0.0}))]
    out = s.aggregate_evaluate(1, two, [])
    assert out is not None and out.loss == pytest.approx(2.5) and out.num_examples == 40


def _budget() -> PrivacyBudget:
    return PrivacyBudget(
        create_accountant("rdp"), noise_multiplier=1.0, sample_rate=1.0, delta=1e-5
    )


@pytest.mark.parametrize("name", sorted(STRATEGIES.names()))
def test_every_registered_strategy_and_wrapper_passes_it_through(name: str) -> None:
    nodes = [f"n{i}" for i in range(10)]
    inner = STRATEGIES.get(name)(seed=1, fraction_evaluate=0.3, min_evaluate_clients=2)
    assert isinstance(inner, FederatedEvaluator)
    expected = inner.sample_evaluate(4, nodes)
    assert len(expected) == 3
    results = [
        (n, EvaluateRes(float(i), 10 + i, {"accuracy": 0.1 * i})) for i, n in enumerate(nodes)
    ]
    want = inner.aggregate_evaluate(4, results, [])
    wrappers = [Accounted(inner, [_budget()])]
    if name not in ("scaffold",):  # central DP and SecAgg wrap FedAvg's round only
        dp = DifferentiallyPrivate(inner, CentralDP(1.0, 1.0, 3.0), _budget())
        wrappers += [
            dp,
            SecureAggregation(inner, SecAggParams()),
            SecureAggregation(dp, SecAggParams()),
        ]
    for w in wrappers:
        assert isinstance(w, FederatedEvaluator)
        assert w.sample_evaluate(4, nodes) == expected, type(w).__name__
        assert w.aggregate_evaluate(4, results, []) == want, type(w).__name__


def test_validation_rejects_bad_results_with_node_and_reason() -> None:
    validate_evaluation("a", 1, EvaluateRes(0.5, 0))
    validate_evaluation("a", 1, EvaluateRes(0.5, np.int64(3), {"accuracy": 1}))  # type: ignore[arg-type]
    bad = [
        (EvaluateRes(float("nan"), 5), "loss nan"),
        (EvaluateRes(float("inf"), 5), "loss inf"),
        (EvaluateRes(0.1, -1), "num_examples -1"),
        (EvaluateRes(0.1, True), "num_examples True"),  # type: ignore[arg-type]
        (EvaluateRes(0.1, 2**31), "outside the allowed range"),
        (EvaluateRes(0.1, 5, {"accuracy": float("nan")}), "['accuracy'] are not finite"),
        (EvaluateRes(0.1, 5, {"x": "high"}), "['x'] are not finite"),  # type: ignore[dict-item]
        (EvaluateRes(0.1, 5, {f"m{i}": 0.0 for i in range(MAX_METRICS + 1)}), "metrics (limit"),
    ]
    for res, why in bad:
        with pytest.raises(UpdateRejected, match="'w3' in round 7") as err:
            validate_evaluation("w3", 7, res)
        assert why in err.value.reason


def test_recorded_in_the_metrics_line_and_the_summary() -> None:
    m = RoundMetrics(3, participants=4)
    assert "federated_accuracy" not in m.to_json() and federated_summary(m.to_json()) == {}
    results = [EvaluateRes(1.0, 10, {"accuracy": 0.5, "f1": 0.2}), EvaluateRes(0.0, 0)]
    record_federated(m, weighted_evaluation(results), results)
    line = m.to_json()
    assert (line["federated_loss"], line["federated_accuracy"], line["federated_clients"]) == (
        1.0,
        0.5,
        1,
    )
    assert line["federated_examples"] == 10 and line["federated_f1"] == 0.2
    assert federated_summary(line) == {
        "final_federated_accuracy": 0.5,
        "final_federated_loss": 1.0,
        "final_federated_clients": 1,
    }
