"""Example-weighted median and trimmed mean: equal weights give the unweighted rules, integer
weights act as repeated rows, order does not matter, no trimming is the weighted mean
(issue 17)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.aggregate import coordinate_median, make_aggregator, trimmed_mean, weighted_mean
from murmura.aggregate.trimmed_mean import trimmed_count
from murmura.aggregate.weighted_order import weighted_median, weighted_trimmed_mean
from murmura.errors import AggregationError

FAST = settings(max_examples=30, deadline=None)


def rows(seed: int, n: int, d: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    # a few repeated values per column, so ties are exercised
    x[rng.random((n, d)) < 0.2] = 0.5
    w = rng.integers(1, 6, n).astype(np.float32)
    return x, w


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), beta=st.floats(0.0, 0.49))
def test_equal_weights_give_the_unweighted_rules(seed: int, n: int, beta: float) -> None:
    x, _ = rows(seed, n)
    w = np.full(n, 3.0, dtype=np.float32)
    np.testing.assert_array_equal(coordinate_median(x, w, weighted=True), coordinate_median(x, w))
    np.testing.assert_allclose(
        trimmed_mean(x, w, beta, weighted=True), trimmed_mean(x, w, beta), rtol=0, atol=1e-6
    )


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(1, 9))
def test_integer_weights_act_as_repeated_rows(seed: int, n: int) -> None:
    x, w = rows(seed, n)
    repeated = np.repeat(x, w.astype(int), axis=0)
    ones = np.ones(len(repeated), dtype=np.float32)
    np.testing.assert_array_equal(weighted_median(x, w), coordinate_median(repeated, ones))
    k = trimmed_count(len(repeated), 0.2)
    np.testing.assert_allclose(
        weighted_trimmed_mean(x, w, k / len(repeated)),
        trimmed_mean(repeated, ones, k / len(repeated) + 1e-12),
        rtol=0,
        atol=1e-6,
    )


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(2, 12), perm_seed=st.integers(0, 100))
def test_weighted_rules_ignore_arrival_order(seed: int, n: int, perm_seed: int) -> None:
    x, w = rows(seed, n)
    p = np.random.default_rng(perm_seed).permutation(n)
    np.testing.assert_array_equal(weighted_median(x, w), weighted_median(x[p], w[p]))
    np.testing.assert_allclose(
        weighted_trimmed_mean(x, w, 0.2), weighted_trimmed_mean(x[p], w[p], 0.2), atol=1e-6
    )


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12))
def test_no_trimming_keeps_the_weighted_mean(seed: int, n: int) -> None:
    x, w = rows(seed, n)
    np.testing.assert_allclose(weighted_trimmed_mean(x, w, 0.0), weighted_mean(x, w), atol=1e-6)


def test_a_heavy_client_moves_the_weighted_median_by_hand() -> None:
    x = np.array([[0.0], [1.0], [2.0]], dtype=np.float32)
    # weights 1, 1, 3: half the weight (2.5) is first reached at 2.0
    assert weighted_median(x, np.array([1, 1, 3], np.float32))[0] == 2.0
    assert coordinate_median(x, np.array([1, 1, 3], np.float32))[0] == 1.0
    # weights 1, 1, 2: the weight splits exactly at 1.0 | 2.0
    assert weighted_median(x, np.array([1, 1, 2], np.float32))[0] == 1.5
    # trim 0.25 of weight 4 from each side of 0,1,2 with weights 1,1,2: keeps 1 (w 1) and 2 (w 1)
    got = weighted_trimmed_mean(x, np.array([1, 1, 2], np.float32), 0.25)
    assert got[0] == pytest.approx(1.5)


def test_weighted_is_a_boolean_parameter_of_the_rules() -> None:
    x = np.array([[0.0], [1.0], [2.0]], dtype=np.float32)
    w = np.array([1, 1, 3], np.float32)
    assert make_aggregator("coordinate_median", weighted=True)(x, w)[0] == 2.0
    # a third of the weight (5/3) off each side: 1 keeps 1/3, 2 keeps 4/3 -> 3 / (5/3)
    assert make_aggregator("trimmed_mean", beta=0.34, weighted=True)(x, w)[0] == pytest.approx(1.8)
    with pytest.raises(AggregationError, match="weighted = 'yes' must be true or false"):
        make_aggregator("trimmed_mean", weighted="yes")
