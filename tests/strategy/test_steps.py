"""FedNova's step normalisation (``[strategy] normalize_steps``, issue 17): equal counts change
nothing, the mean is FedNova's formula, arrival order does not matter, lies are bounded."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.aggregate.buffer import UpdateBuffer
from murmura.aggregate.preaggregation import make_rule
from murmura.aggregate.steps import (
    LOCAL_STEPS,
    SPREAD,
    effective_steps,
    normalise_steps,
)
from murmura.client import LocalSGD, sgd_steps
from murmura.errors import UpdateRejected
from murmura.strategy.fedavg import FedAvg
from murmura.strategy.steps import StepNormalised, reported_steps
from murmura.types import FitRes
from murmura.validation import default_checks, validate

FAST = settings(max_examples=25, deadline=None)


def fednova_delta(rows: Any, steps: list[int], weights: Any) -> Any:
    """FedNova's round delta ``tau_eff * sum_i p_i Delta_i / tau_i``, written from the paper."""
    x = np.asarray(rows, dtype=np.float64)
    tau = np.asarray(steps, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    p = w / w.sum()
    return (float(p @ tau) * (p / tau) @ x).astype(np.float32)


RULES: list[tuple[str, dict[str, Any], str]] = [
    ("weighted_mean", {}, "none"),
    ("coordinate_median", {}, "none"),
    ("trimmed_mean", {"beta": 0.2}, "nnm"),
    ("geometric_median", {}, "nnm"),
    ("krum", {"f": 1}, "nnm"),
]


def buffer(rows: np.ndarray, counts: list[int], steps: list[Any]) -> UpdateBuffer:
    buf = UpdateBuffer(len(rows), rows.shape[1])
    for i, (row, n, tau) in enumerate(zip(rows, counts, steps, strict=True)):
        buf.add(f"client-{i}", row, n, {"train_loss": 1.0, LOCAL_STEPS: float(tau)})
    return buf


def fedavg(rule: str, args: dict[str, Any], pre: str) -> FedAvg:
    return FedAvg(aggregator=make_rule(rule, args, pre))


def case(seed: int, n: int, d: int = 6) -> tuple[np.ndarray, list[int], list[int]]:
    rng = np.random.default_rng(seed)
    counts = [int(c) for c in rng.integers(1, 50, n)]
    steps = [int(t) for t in rng.integers(1, 12, n)]
    rows = (rng.standard_normal((n, d)) * np.asarray(steps)[:, None]).astype(np.float32)
    return rows, counts, steps


@FAST
@given(st.integers(0, 10**6), st.integers(5, 9), st.integers(1, 20), st.sampled_from(RULES))
def test_equal_counts_give_exactly_the_unnormalised_model(
    seed: int, n: int, tau: int, rule: tuple[str, dict[str, Any], str]
) -> None:
    rows, counts, _ = case(seed, n)
    w = np.zeros(rows.shape[1], np.float32)
    plain = fedavg(*rule).aggregate(1, w, buffer(rows, counts, [tau] * n), [])
    nova = StepNormalised(fedavg(*rule)).aggregate(1, w, buffer(rows, counts, [tau] * n), [])
    assert plain is not None and nova is not None
    np.testing.assert_array_equal(nova, plain)


def test_fedavg_matches_fednova_on_a_hand_made_example() -> None:
    """Two clients, 1 and 3 steps, 10 and 30 examples: p = (1/4, 3/4), tau_eff = 2.5,
    d = ([4, 0], [0, 2]), Delta = 2.5 * (1/4 [4, 0] + 3/4 [0, 2]) = [2.5, 3.75]."""
    rows = np.asarray([[4.0, 0.0], [0.0, 6.0]], np.float32)
    new = StepNormalised(FedAvg()).aggregate(
        1, np.zeros(2, np.float32), buffer(rows, [10, 30], [1, 3]), []
    )
    np.testing.assert_allclose(new, [2.5, 3.75], rtol=1e-6)
    # the plain mean would be [1, 4.5]: the 3-step client pulls three times harder
    np.testing.assert_allclose(fednova_delta(rows, [1, 3], np.asarray([10.0, 30.0])), [2.5, 3.75])


@FAST
@given(st.integers(0, 10**6), st.integers(2, 9))
def test_fedavg_is_fednova(seed: int, n: int) -> None:
    rows, counts, steps = case(seed, n)
    start = np.ones(rows.shape[1], np.float32)
    new = StepNormalised(FedAvg(server_lr=1.0)).aggregate(1, start, buffer(rows, counts, steps), [])
    assert new is not None
    want = fednova_delta(rows, steps, np.asarray(counts, np.float64))
    np.testing.assert_allclose(new - start, want, rtol=1e-4, atol=1e-5)


@FAST
@given(st.integers(0, 10**6), st.integers(5, 9), st.sampled_from(RULES))
def test_arrival_order_does_not_matter(
    seed: int, n: int, rule: tuple[str, dict[str, Any], str]
) -> None:
    rows, counts, steps = case(seed, n)
    perm = np.random.default_rng(seed + 1).permutation(n)
    w = np.zeros(rows.shape[1], np.float32)
    a = StepNormalised(fedavg(*rule)).aggregate(1, w, buffer(rows, counts, steps), [])
    b = StepNormalised(fedavg(*rule)).aggregate(
        1, w, buffer(rows[perm], [counts[i] for i in perm], [steps[i] for i in perm]), []
    )
    assert a is not None and b is not None
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@FAST
@given(
    st.lists(st.integers(1, 100), min_size=5, max_size=15),
    st.integers(1, 2**31 - 1),
    st.integers(1, 2**31 - 1),
)
def test_a_lying_minority_moves_the_robust_tau_eff_by_at_most_spread(
    honest: list[int], lie: int, weight: int
) -> None:
    """Fewer than half the counts lie, with any weight: tau_eff stays within SPREAD x the
    honest range; the paper's formula has no such bound."""
    liars = (len(honest) - 1) // 2
    steps = honest + [lie] * liars
    weights = np.asarray([1.0] * len(honest) + [float(weight)] * liars)
    tau = effective_steps(steps, weights, robust=True)
    assert min(honest) / SPREAD - 1e-9 <= tau <= max(honest) * SPREAD + 1e-9


def test_the_paper_tau_eff_is_the_weighted_mean_and_the_robust_one_is_clamped() -> None:
    w = np.asarray([1.0, 1.0, 1.0, 1.0])
    assert effective_steps([5, 5, 10, 15], w, robust=False) == pytest.approx(8.75)
    # median 7.5: 15 stays (<= 15), nothing is clamped
    assert effective_steps([5, 5, 10, 15], w, robust=True) == pytest.approx(8.75)
    # median 5: 1000 is clamped to 10, 1 to 2.5
    assert effective_steps([5, 5, 5, 1000, 1], np.ones(5), robust=True) == pytest.approx(5.5)
    rows = np.ones((2, 3), np.float32)
    same, tau = normalise_steps(rows, [4, 4], np.ones(2, np.float32), robust=True)
    assert same is rows and tau == 4.0


def test_sgd_steps_counts_the_batches_train_local_sgd_takes() -> None:
    hp = LocalSGD(epochs=5, batch_size=16)
    assert [sgd_steps(n, hp) for n in (0, 1, 16, 17, 45)] == [0, 5, 5, 10, 15]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (float("nan"), "nan"),
        (-1.0, "-1.0"),
        (2.5, "2.5"),
        (2.0**31, "2147483648.0"),
        (float("inf"), "inf"),
    ],
)
def test_a_malformed_step_count_is_rejected_naming_node_and_round(value: float, why: str) -> None:
    res = FitRes(np.zeros(3, np.float32), 5, {LOCAL_STEPS: value})
    with pytest.raises(UpdateRejected) as err:
        validate("client-7", 4, res, default_checks(3))
    text = str(err.value)
    assert "client-7" in text and "4" in text and LOCAL_STEPS in text and why in text


def test_a_valid_or_absent_step_count_passes() -> None:
    for metrics in ({}, {LOCAL_STEPS: 0.0}, {LOCAL_STEPS: 15.0}, {LOCAL_STEPS: 2.0**31 - 1}):
        validate("c", 1, FitRes(np.zeros(3, np.float32), 5, metrics), default_checks(3))


@pytest.mark.parametrize("value", [True, "5", None, float("nan"), 0, -3, 1.5, 2**31])
def test_reported_steps_refuses_what_is_not_a_positive_integer(value: Any) -> None:
    assert reported_steps({LOCAL_STEPS: value}) is None


def test_an_update_without_a_step_count_is_left_out_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = np.asarray([[1.0, 0.0], [0.0, 3.0], [9.0, 9.0]], np.float32)
    buf = buffer(rows[:2], [1, 1], [1, 3])
    buf2 = UpdateBuffer(3, 2)
    for i in range(2):
        buf2.add(buf.nodes[i], rows[i], 1, buf.metrics[i])
    buf2.add("client-9", rows[2], 1, {"train_loss": 1.0})
    new = StepNormalised(FedAvg()).aggregate(3, np.zeros(2, np.float32), buf2, [])
    np.testing.assert_allclose(new, [1.0, 1.0])  # tau_eff 2: [2, 0] and [0, 2], mean
    assert "round 3 node client-9: no valid local_steps" in caplog.text
