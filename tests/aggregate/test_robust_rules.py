"""Properties and hand-computed cases of the Byzantine-robust aggregation rules (issue 3)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.aggregate import (
    AGGREGATORS,
    bulyan,
    bulyan_select,
    centered_clipping,
    coordinate_median,
    geometric_median,
    krum,
    krum_select,
    make_aggregator,
    multi_krum,
    norm_bounding,
    trimmed_mean,
)
from murmura.aggregate.bulyan import closest_to_median_mean
from murmura.aggregate.distances import pairwise_squared_distances
from murmura.errors import AggregationError

ROBUST = [
    "bulyan",
    "centered_clipping",
    "coordinate_median",
    "geometric_median",
    "krum",
    "multi_krum",
    "norm_bounding",
    "trimmed_mean",
]
FAST = settings(max_examples=25, deadline=None)


def params_for(name: str, n: int) -> dict[str, Any]:
    """The strongest parameters each rule accepts for ``n`` clients."""
    if name in ("krum", "multi_krum"):
        return {"f": max((n - 3) // 2, 0)}
    if name == "bulyan":
        return {"f": max((n - 3) // 4, 0)}
    if name == "trimmed_mean":
        return {"beta": 0.2}
    if name == "norm_bounding":
        return {"bound": 1e6}
    return {}


def normal(seed: int, n: int, d: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_every_robust_rule_is_registered_and_not_linear() -> None:
    for name in ROBUST:
        rule = make_aggregator(name)
        assert rule.name == name and not rule.linear
        assert name in AGGREGATORS


@FAST
@given(
    name=st.sampled_from(ROBUST),
    n=st.integers(3, 12),
    d=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_invariant_to_client_order(name: str, n: int, d: int, seed: int) -> None:
    # Continuous random data: distinct rows and no exactly tied Krum scores but structural ones.
    x = normal(seed, n, d)
    rng = np.random.default_rng(seed + 1)
    w = rng.uniform(0.5, 2.0, n).astype(np.float32)
    order = rng.permutation(n)
    rule = make_aggregator(name, **params_for(name, n))
    np.testing.assert_allclose(rule(x[order], w[order]), rule(x, w), rtol=1e-5, atol=1e-5)


@FAST
@given(
    name=st.sampled_from(ROBUST),
    n=st.integers(3, 12),
    row=st.lists(st.floats(-1e3, 1e3, width=32), min_size=1, max_size=6),
)
def test_all_rows_equal_x_gives_x(name: str, n: int, row: list[float]) -> None:
    x = np.array(row, dtype=np.float32)
    updates = np.tile(x, (n, 1))
    out = make_aggregator(name, **params_for(name, n))(updates, np.ones(n, np.float32))
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, x, rtol=1e-5, atol=1e-4)


@FAST
@given(n=st.integers(1, 12), d=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_trimmed_mean_with_beta_zero_is_the_mean(n: int, d: int, seed: int) -> None:
    x = normal(seed, n, d)
    out = trimmed_mean(x, np.ones(n, np.float32), beta=0.0)
    np.testing.assert_allclose(out, x.mean(axis=0), rtol=1e-5, atol=1e-6)


@FAST
@given(n=st.integers(1, 12), d=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_median_equals_numpy_median(n: int, d: int, seed: int) -> None:
    x = normal(seed, n, d)
    np.testing.assert_array_equal(coordinate_median(x, np.ones(n, np.float32)), np.median(x, 0))


def honest_and_far_attackers(seed: int, n: int, d: int, f: int, side: int) -> np.ndarray:
    """``n - f`` standard normal rows, then ``f`` rows about 1e3 away on a random side."""
    rng = np.random.default_rng(seed)
    honest = rng.standard_normal((n - f, d))
    direction = rng.choice([-1.0, 1.0], size=d) if side == 0 else side
    attackers = 1e3 * direction + rng.standard_normal((f, d))
    return np.vstack([honest, attackers]).astype(np.float32)


@FAST
@given(
    f=st.integers(0, 4),
    extra=st.integers(0, 4),
    d=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    side=st.sampled_from([-1, 0, 1]),
)
def test_krum_returns_an_honest_input_row(f: int, extra: int, d: int, seed: int, side: int) -> None:
    n = 2 * f + 3 + extra
    x = honest_and_far_attackers(seed, n, d, f, side)
    out = krum(x, np.ones(n, np.float32), f=f)
    assert any(np.array_equal(out, row) for row in x[: n - f])
    assert set(krum_select(x, f, n - f).tolist()) == set(range(n - f))
    np.testing.assert_allclose(
        multi_krum(x, np.ones(n, np.float32), f=f), x[: n - f].mean(0), atol=1e-5
    )


@FAST
@given(
    f=st.integers(0, 3),
    extra=st.integers(0, 3),
    d=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    side=st.sampled_from([-1, 0, 1]),
)
def test_bulyan_stays_in_honest_range_with_far_attackers(
    f: int, extra: int, d: int, seed: int, side: int
) -> None:
    n = 4 * f + 3 + extra
    x = honest_and_far_attackers(seed, n, d, f, side)
    out = bulyan(x, np.ones(n, np.float32), f=f)
    honest = x[: n - f]
    assert (out >= honest.min(0) - 1e-5).all() and (out <= honest.max(0) + 1e-5).all()
    assert len(bulyan_select(x, f)) == n - 2 * f


@FAST
@given(
    n=st.integers(2, 12),
    d=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    attack=st.lists(st.floats(-1e6, 1e6, width=32), min_size=6, max_size=6),
)
def test_trimmed_mean_and_median_stay_in_honest_range(
    n: int, d: int, seed: int, attack: list[float]
) -> None:
    # Attackers may sit anywhere, inside or outside the honest range.
    beta = 0.3
    f = int(np.floor(beta * n + 1e-9))
    x = normal(seed, n, d)
    x[n - f :] = np.array(attack[:d], dtype=np.float32)
    honest = x[: n - f]
    lo, hi = honest.min(0) - 1e-5, honest.max(0) + 1e-5
    for out in (
        trimmed_mean(x, np.ones(n, np.float32), beta=beta),
        coordinate_median(x, np.ones(n, np.float32)),
    ):
        assert (out >= lo).all() and (out <= hi).all()


@FAST
@given(
    n=st.integers(1, 10),
    d=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(1e-3, 1e3),
    bound=st.floats(1e-2, 1e2),
)
def test_norm_bounding_output_is_inside_the_ball(
    n: int, d: int, seed: int, scale: float, bound: float
) -> None:
    x = normal(seed, n, d) * np.float32(scale)
    out = norm_bounding(x, np.ones(n, np.float32), bound=bound)
    assert np.linalg.norm(out.astype(np.float64)) <= bound * (1 + 1e-5)


@pytest.mark.parametrize(
    ("name", "params", "n", "needle"),
    [
        ("krum", {"f": 4}, 10, "2f + 3 = 11"),
        ("multi_krum", {"f": 2}, 6, "2f + 3 = 7"),
        ("multi_krum", {"f": 1, "m": 9}, 8, "m = 9"),
        ("bulyan", {"f": 2}, 10, "4f + 3 = 11"),
    ],
)
def test_f_too_large_for_n_is_an_error_naming_rule_value_and_limit(
    name: str, params: dict[str, Any], n: int, needle: str
) -> None:
    rule = make_aggregator(name, **params)
    with pytest.raises(AggregationError, match=name) as err:
        rule(normal(0, n, 3), np.ones(n, np.float32))
    assert needle in str(err.value) and f"n = {n}" in str(err.value)
    with pytest.raises(AggregationError, match=name):
        rule.check(n)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("trimmed_mean", {"beta": 0.5}),
        ("trimmed_mean", {"beta": -0.1}),
        ("krum", {"f": -1}),
        ("krum", {"f": 1.5}),
        ("multi_krum", {"m": 0}),
        ("bulyan", {"f": -2}),
        ("geometric_median", {"eps": 0.0}),
        ("geometric_median", {"max_iter": 0}),
        ("centered_clipping", {"tau": 0.0}),
        ("centered_clipping", {"iters": 0}),
        ("norm_bounding", {"bound": -1.0}),
        ("norm_bounding", {"bound": float("inf")}),
    ],
)
def test_impossible_parameters_are_refused_when_built(name: str, params: dict[str, Any]) -> None:
    with pytest.raises(AggregationError, match=name):
        make_aggregator(name, **params)


def test_pure_functions_check_their_parameters_too() -> None:
    x, w = normal(0, 5, 2), np.ones(5, np.float32)
    with pytest.raises(AggregationError, match="trimmed_mean"):
        trimmed_mean(x, w, beta=0.5)
    with pytest.raises(AggregationError, match="krum"):
        krum(x, w, f=2)
    with pytest.raises(AggregationError, match="bulyan"):
        bulyan_select(x, 1)


def test_hand_computed_coordinate_rules() -> None:
    x = np.array([[1, 10], [2, 20], [3, 30], [4, 40], [100, -100]], dtype=np.float32)
    w = np.ones(5, np.float32)
    np.testing.assert_array_equal(coordinate_median(x, w), [3, 20])
    # beta = 0.2 of 5 drops one value per side: (2 + 3 + 4) / 3 and (10 + 20 + 30) / 3.
    np.testing.assert_allclose(trimmed_mean(x, w, beta=0.2), [3, 20])
    np.testing.assert_array_equal(coordinate_median(x[:4], w[:4]), [2.5, 25])


def test_hand_computed_krum() -> None:
    # Points on a line at 0, 1, 2, 10; f = 0 counts n - 2 = 2 neighbours.
    # Scores: 0 -> 1 + 4 = 5, 1 -> 1 + 1 = 2, 2 -> 1 + 4 = 5, 10 -> 64 + 81 = 145.
    x = np.array([[0.0], [1.0], [2.0], [10.0]], dtype=np.float32)
    w = np.array([1, 1, 1, 5], dtype=np.float32)
    np.testing.assert_array_equal(krum(x, w, f=0), [1.0])
    # 0 and 2 tie at 5 and are ordered by their distances to the others, nearest first: 2 (1, 4,
    # 64) before 0 (1, 4, 100); m = 3 averages 0, 1, 2 with equal weights.
    assert krum_select(x, 0, 4).tolist() == [1, 2, 0, 3]
    np.testing.assert_allclose(multi_krum(x, w, f=0, m=3), [1.0])
    d2 = pairwise_squared_distances(x)
    np.testing.assert_allclose(d2[[0, 1, 2], [3, 3, 3]], [100, 81, 64])


def test_krum_tie_of_mutual_nearest_neighbours_ignores_client_order() -> None:
    # f = 0 with n = 3 counts one neighbour: 0.0 and 0.5 are mutual nearest and tie at 0.25;
    # 0.5 is closer to the third row (6.25 against 9), so it wins in either client order.
    x = np.array([[0.5], [0.0], [3.0]], dtype=np.float32)
    w = np.ones(3, np.float32)
    assert krum(x, w, f=0)[0] == krum(x[::-1].copy(), w, f=0)[0] == 0.5


def test_hand_computed_bulyan_window() -> None:
    # Median 4; windows of 5 from 1, 2, 3 reach 3, 2 and 96: the middle one wins, mean 4.
    block = np.array([[1, 2, 3, 4, 5, 6, 100]], dtype=np.float32)
    np.testing.assert_allclose(closest_to_median_mean(block, 5), [4.0])
    # Median 10; windows reach 10, 10 and 1, so the last wins: (4 * 10 + 11) / 5 = 10.2.
    # If 11 is an attacker and the honest maximum is 10, the paper's rule lands just outside
    # the honest range; attackers far away cannot do that (property test above).
    block = np.array([[0, 0, 10, 10, 10, 10, 11]], dtype=np.float32)
    np.testing.assert_allclose(closest_to_median_mean(block, 5), [10.2])


def test_geometric_median_resists_an_outlier_and_honours_weights() -> None:
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1e6, 1e6]], dtype=np.float32)
    out = geometric_median(x, np.ones(4, np.float32))
    assert np.linalg.norm(out) < 2.0
    # A weight above half the total puts the weighted geometric median on that point.
    heavy = geometric_median(x, np.array([1, 1, 1, 4], np.float32))
    np.testing.assert_allclose(heavy, [1e6, 1e6], rtol=1e-4)


def test_centered_clipping_moves_at_most_tau_per_step() -> None:
    x = np.array([[0.0, 0.0], [0.0, 0.0], [30.0, 40.0]], dtype=np.float32)
    w = np.ones(3, np.float32)
    # From the centre 0 with tau = 1, only the far row moves v: by (3, 4) / 5 / 3 per step.
    out = centered_clipping(x, w, tau=1.0, iters=1, center=np.zeros(2, np.float32))
    np.testing.assert_allclose(out, [0.2, 0.8 / 3], rtol=1e-5)
    # Default centre is the coordinate median (0, 0); a huge tau gives the plain mean.
    np.testing.assert_allclose(centered_clipping(x, w, tau=1e9, iters=1), [10, 40 / 3], rtol=1e-5)


def test_norm_bounding_hand_computed() -> None:
    x = np.array([[3.0, 4.0], [0.3, 0.4]], dtype=np.float32)
    # Row 0 (norm 5) is scaled to norm 1: (0.6, 0.8); row 1 (norm 0.5) is kept.
    out = norm_bounding(x, np.array([1.0, 3.0], np.float32), bound=1.0)
    np.testing.assert_allclose(out, [(0.6 + 3 * 0.3) / 4, (0.8 + 3 * 0.4) / 4], rtol=1e-6)


def test_column_blocks_give_the_same_result_as_one_block() -> None:
    # More columns than one sort block (8,192) and one Gram block (65,536).
    x = normal(3, 7, 70_000)
    w = np.ones(7, np.float32)
    np.testing.assert_array_equal(coordinate_median(x, w), np.median(x, 0))
    s = np.sort(x, 0)
    np.testing.assert_allclose(trimmed_mean(x, w, beta=0.2), s[1:6].mean(0), rtol=1e-5, atol=1e-6)
    exact = ((x[:, None, :].astype(np.float64) - x[None]) ** 2).sum(-1)
    np.testing.assert_allclose(pairwise_squared_distances(x), exact, rtol=1e-6)


def test_bulyan_matches_a_direct_reference_across_column_blocks() -> None:
    # Per coordinate: the n - 4f chosen values closest to the chosen values' median, averaged.
    n, f = 11, 2
    x = normal(4, n, 20_000)
    chosen = x[bulyan_select(x, f)].astype(np.float64)
    deviation = np.abs(chosen - np.median(chosen, axis=0))
    closest = np.argsort(deviation, axis=0, kind="stable")[: n - 4 * f]
    expected = np.take_along_axis(chosen, closest, axis=0).mean(axis=0)
    np.testing.assert_allclose(bulyan(x, np.ones(n, np.float32), f=f), expected, atol=1e-6)
