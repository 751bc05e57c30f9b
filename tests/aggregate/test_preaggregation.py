"""Pre-aggregation (NNM, bucketing, ARC): the honest average, permutation invariance, the
paper's formulas on hand-made examples, and composition with every rule (issue 17)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.aggregate import AGGREGATORS, make_aggregator, weighted_mean
from murmura.aggregate.preaggregation import (
    PRE_AGGREGATIONS,
    PreAggregated,
    arc,
    bucketing,
    make_rule,
    nnm,
)
from murmura.errors import AggregationError, RegistryError

FAST = settings(max_examples=25, deadline=None)
RULES = ["coordinate_median", "trimmed_mean", "krum", "multi_krum", "geometric_median"]


def rows(seed: int, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.integers(1, 50, n).astype(np.float32)
    return x, w


def rule_params(name: str, n: int) -> dict[str, Any]:
    return {"f": 1} if "krum" in name else {"beta": 0.1} if name == "trimmed_mean" else {}


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(5, 12), rule=st.sampled_from(RULES))
def test_nnm_without_attackers_gives_every_rule_the_weighted_mean(
    seed: int, n: int, rule: str
) -> None:
    x, w = rows(seed, n, 7)
    mixed, mixed_w = nnm(x, w, fraction=0.0)  # f = 0: every row's neighbourhood is all rows
    want = weighted_mean(x, w)
    np.testing.assert_allclose(mixed, np.tile(want, (n, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mixed_w, w)
    got = make_rule(rule, rule_params(rule, n), "nnm", {"fraction": 0.0})(x, w)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(1, 15), s=st.integers(1, 6))
def test_bucketing_keeps_the_weighted_mean_exactly(seed: int, n: int, s: int) -> None:
    x, w = rows(seed, n, 5)
    means, bucket_w = bucketing(x, w, s=s, seed=seed)
    assert means.shape == (-(-n // s), 5)
    assert bucket_w.sum() == pytest.approx(w.sum())
    np.testing.assert_allclose(weighted_mean(means, bucket_w), weighted_mean(x, w), atol=1e-5)


def test_bucketing_with_a_robust_rule_keeps_the_average_in_expectation() -> None:
    # identical clients but for zero-mean noise: the median of bucket means over many
    # rounds (fresh shuffles) averages to the honest mean
    rng = np.random.default_rng(0)
    centre = rng.standard_normal(4).astype(np.float32)
    rule = make_rule("coordinate_median", {}, "bucketing", {"s": 2})
    outs = []
    for _ in range(400):
        noise = rng.standard_normal((10, 4)).astype(np.float32)
        noise -= noise.mean(axis=0)  # the honest average is exactly ``centre``
        outs.append(rule(centre + noise, np.ones(10, np.float32)))
    np.testing.assert_allclose(np.mean(outs, axis=0), centre, atol=0.06)


@FAST
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(3, 12),
    pre=st.sampled_from(["nnm", "weighted nnm", "bucketing", "arc"]),
    data=st.data(),
)
def test_pre_aggregation_is_permutation_invariant(seed: int, n: int, pre: str, data: Any) -> None:
    x, w = rows(seed, n, 6)
    perm = np.asarray(data.draw(st.permutations(range(n))))
    fn = (
        PRE_AGGREGATIONS.get("nnm")(weighted=True)
        if pre == "weighted nnm"
        else (PRE_AGGREGATIONS.get(pre)())
    )
    base, base_w = fn(x, w)
    moved, moved_w = fn(x[perm], w[perm])
    if pre == "bucketing":  # the buckets depend on the rows' content, not their order
        np.testing.assert_allclose(moved, base, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(moved_w, base_w)
    else:  # row i still speaks for client i
        np.testing.assert_allclose(moved, base[perm], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(moved_w, base_w[perm])
    rule = PreAggregated(fn, make_aggregator("coordinate_median"))
    np.testing.assert_allclose(rule(x[perm], w[perm]), rule(x, w), rtol=1e-5, atol=1e-6)


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), fraction=st.floats(0.0, 0.49))
def test_weighted_nnm_is_nnm_for_equal_weights_and_the_mean_without_attackers(
    seed: int, n: int, fraction: float
) -> None:
    x, w = rows(seed, n, 5)
    equal = np.full(n, 7.0, np.float32)
    np.testing.assert_allclose(
        nnm(x, equal, fraction, weighted=True)[0], nnm(x, equal, fraction)[0], atol=1e-6
    )
    mixed, mixed_w = nnm(x, w, 0.0, weighted=True)
    np.testing.assert_allclose(mixed, np.tile(weighted_mean(x, w), (n, 1)), atol=1e-5)
    np.testing.assert_array_equal(mixed_w, w)


def test_weighted_nnm_takes_the_nearest_share_of_the_weight() -> None:
    # rows at 0, 1, 10 with weights 1, 1, 8; f = 1 of 4 rows is kept out: 3/4 of weight 10
    # is 7.5; from row 0: 0 (1), 1 (1), then 5.5 of the 8 at 10
    x = np.array([[0.0], [1.0], [10.0], [11.0]], np.float32)
    w = np.array([1, 1, 8, 0.001], np.float32)
    mixed, _ = nnm(x, w, fraction=0.25, weighted=True)
    total = 7.5 * (1 + 1 + 8 + 0.001) / 10
    want = (0.0 * 1 + 1.0 * 1 + 10.0 * (total - 2)) / total
    assert mixed[0, 0] == pytest.approx(want, rel=1e-5)
    plain, _ = nnm(x, w, fraction=0.25)  # 3 nearest rows: 0, 1, 10 by weight
    assert plain[0, 0] == pytest.approx(81.0 / 10, rel=1e-5)


def test_nnm_mixes_each_row_with_its_nearest_neighbours() -> None:
    # n = 5, fraction 0.2: f = 1, each row averages its 4 nearest (itself included)
    x = np.array([[0.0], [1.0], [2.0], [3.0], [100.0]], dtype=np.float32)
    mixed, _ = nnm(x, np.ones(5, np.float32), fraction=0.2)
    np.testing.assert_allclose(mixed[:, 0], [1.5, 1.5, 1.5, 1.5, 26.5])


def test_nnm_weights_the_neighbourhood_by_the_clients_weights() -> None:
    x = np.array([[0.0], [1.0], [2.0], [3.0], [100.0]], dtype=np.float32)
    w = np.array([1, 1, 1, 5, 1], dtype=np.float32)
    mixed, _ = nnm(x, w, fraction=0.2)
    np.testing.assert_allclose(mixed[0, 0], (0 + 1 + 2 + 15) / 8)


def test_arc_clips_to_the_norm_of_the_k_plus_first_largest() -> None:
    # n = 10, fraction 0.2: f = 2, k = floor(2 * 2/10 * 8) = 3; C = 4th largest norm = 7
    norms = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 50], dtype=np.float64)
    dirs = np.random.default_rng(1).standard_normal((10, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    x = (dirs * norms[:, None]).astype(np.float32)
    out, w = arc(x, np.ones(10, np.float32), fraction=0.2)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), [1, 2, 3, 4, 5, 6, 7, 7, 7, 7], 1e-5)
    np.testing.assert_allclose(out[:7], x[:7])  # below C: unchanged
    np.testing.assert_allclose(out[7:] / 7, dirs[7:], atol=1e-6)  # above: same direction
    # n = 5, fraction 0.2: f = 1, k = floor(2 * 1/5 * 4) = 1: only the largest is clipped
    out5, _ = arc(x[5:], np.ones(5, np.float32), fraction=0.2)
    np.testing.assert_allclose(np.linalg.norm(out5, axis=1), [6, 7, 8, 9, 9], 1e-5)
    # fraction 0: nothing assumed Byzantine, nothing clipped
    np.testing.assert_array_equal(arc(x, np.ones(10, np.float32), fraction=0.0)[0], x)


def test_nnm_lets_a_robust_rule_keep_more_of_heterogeneous_honest_clients() -> None:
    # two groups of honest clients far apart (label skew); the honest mean is at 0.5
    rng = np.random.default_rng(3)
    x = np.vstack([rng.normal(0.0, 0.05, (6, 8)), rng.normal(1.0, 0.05, (4, 8))]).astype(np.float32)
    w = np.ones(10, np.float32)
    honest = weighted_mean(x, w)
    plain = make_aggregator("krum", f=2)(x, w)
    mixed = make_rule("krum", {"f": 2}, "nnm", {"fraction": 0.2})(x, w)
    assert np.linalg.norm(mixed - honest) < 0.5 * np.linalg.norm(plain - honest)


@pytest.mark.parametrize("rule", sorted(set(AGGREGATORS.names()) - {"foolsgold"}))
@pytest.mark.parametrize("pre", ["nnm", "bucketing", "arc"])
def test_every_rule_composes_with_every_pre_aggregation(rule: str, pre: str) -> None:
    x, w = rows(7, 14, 5)  # bucketing leaves 7 rows: enough for Bulyan with f = 1
    params = {"f": 1} if rule in ("krum", "multi_krum", "bulyan") else {}
    agg = make_rule(rule, params, pre, {})
    assert agg.name == f"{pre}+{rule}" and not agg.linear
    out = agg(x, w)
    assert out.shape == (5,) and out.dtype == np.float32 and np.isfinite(out).all()


def test_bucketing_checks_the_rule_against_the_number_of_buckets() -> None:
    agg = make_rule("krum", {"f": 2}, "bucketing", {"s": 2})
    agg.check(14)  # 7 buckets >= 2f + 3
    with pytest.raises(AggregationError, match="n = 6"):
        agg.check(12)


@pytest.mark.parametrize(
    ("pre", "args", "match"),
    [
        ("nnm", {"fraction": 0.5}, "fraction"),
        ("arc", {"fraction": -0.1}, "fraction"),
        ("bucketing", {"s": 0}, "bucket size"),
        ("none", {"fraction": 0.2}, "without a pre_aggregation"),
    ],
)
def test_bad_pre_aggregation_parameters_are_refused(
    pre: str, args: dict[str, Any], match: str
) -> None:
    with pytest.raises(AggregationError, match=match):
        make_rule("coordinate_median", {}, pre, args)


def test_unknown_pre_aggregation_lists_the_valid_ones() -> None:
    with pytest.raises(RegistryError, match="arc, bucketing, nnm"):
        make_rule("coordinate_median", {}, "mixing", {})
