"""The statistics math: pooled equality, merge associativity, histograms, wire round trip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from murmura.analytics import wire
from murmura.analytics.bounded import feature_scale, from_bounded, to_bounded
from murmura.analytics.query import StatsQuery
from murmura.analytics.result import finish
from murmura.analytics.summary import local_summary, merge, merge_all
from murmura.errors import InstructionRejected

QUERY = StatsQuery((-50.0,), (50.0,), bins=7, classes=4)
values = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def sites(draw: st.DrawFn, d: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Two to six sites of (rows, labels), some possibly empty, around a random offset."""
    offset = draw(st.floats(-1e5, 1e5))
    out = []
    for _ in range(draw(st.integers(2, 6))):
        n = draw(st.integers(0, 12))
        x = draw(arrays(np.float64, (n, d), elements=st.floats(-1e3, 1e3))) + offset
        y = draw(arrays(np.int64, (n,), elements=st.integers(0, 3)))
        out.append((x, y))
    return out


@settings(max_examples=60, deadline=None)
@given(sites())
def test_merged_mean_and_variance_equal_the_pooled_data(parts: list) -> None:
    pooled_x = np.concatenate([x for x, _ in parts])
    pooled_y = np.concatenate([y for _, y in parts])
    if len(pooled_x) == 0:
        return
    stats = finish(merge_all(local_summary(x, y, QUERY) for x, y in parts), QUERY, len(parts))
    assert stats.count == len(pooled_x)
    np.testing.assert_allclose(stats.mean, pooled_x.mean(axis=0), rtol=1e-6, atol=1e-6)
    var = pooled_x.var(axis=0)
    np.testing.assert_allclose(stats.variance, var, rtol=1e-6, atol=1e-6 * (1 + var.max()))
    assert stats.minimum is not None and stats.maximum is not None
    np.testing.assert_array_equal(stats.minimum, pooled_x.min(axis=0))
    np.testing.assert_array_equal(stats.maximum, pooled_x.max(axis=0))
    np.testing.assert_array_equal(stats.labels, np.bincount(pooled_y, minlength=4))
    np.testing.assert_array_equal(stats.hist, local_summary(pooled_x, pooled_y, QUERY).hist)


@settings(max_examples=60, deadline=None)
@given(sites())
def test_merge_is_associative_and_commutative(parts: list) -> None:
    a, b, c = (local_summary(x, y, QUERY) for x, y in (parts + parts)[:3])
    left, right = merge(merge(a, b), c), merge(a, merge(b, c))
    swapped = merge(c, merge(b, a))
    for other in (right, swapped):
        assert other.count == left.count
        np.testing.assert_allclose(other.total, left.total, rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(other.m2, left.m2, rtol=1e-7, atol=1e-6)
        np.testing.assert_array_equal(other.hist, left.hist)
        np.testing.assert_array_equal(other.labels, left.labels)


@given(arrays(np.float64, (20, 2), elements=st.floats(-100, 100)))
def test_histogram_counts_every_row_once_in_the_bin_numpy_picks(x: np.ndarray) -> None:
    s = local_summary(x, None, StatsQuery((-50.0,), (50.0,), bins=5))
    assert (s.hist.sum(axis=1) == 20).all()
    inside = np.clip(x, -50.0, 50.0)  # out of range: first or last bin
    for j in range(2):
        want, _ = np.histogram(inside[:, j], bins=5, range=(-50.0, 50.0))
        # numpy puts a value on an inner edge in the upper bin, as floor does
        np.testing.assert_array_equal(s.hist[j], want)


def test_histogram_of_known_values() -> None:
    x = np.array([[0.0], [0.1], [0.5], [0.99], [1.0], [-3.0], [7.0]])
    s = local_summary(x, None, StatsQuery((0.0,), (1.0,), bins=2))
    np.testing.assert_array_equal(s.hist, [[3, 4]])  # 0, 0.1, -3 | 0.5, 0.99, 1, 7


@settings(max_examples=40, deadline=None)
@given(sites())
def test_wire_round_trip_is_exact(parts: list) -> None:
    for x, y in parts:
        s = local_summary(x, y, QUERY)
        back = wire.decode(wire.encode(s), QUERY)
        assert back.count == s.count
        for got, want in ((back.total, s.total), (back.m2, s.m2), (back.hist, s.hist)):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(back.minimum, s.minimum)


def test_wire_refuses_an_answer_that_does_not_add_up() -> None:
    s = local_summary(np.arange(6.0).reshape(3, 2), np.array([0, 1, 1]), QUERY)
    v = wire.encode(s)
    with pytest.raises(ValueError, match="numbers do not answer"):
        wire.decode(v[:-1], QUERY)
    bad = v.copy()
    bad[1] = 4  # count 4, histograms of 3
    with pytest.raises(ValueError, match="does not add up"):
        wire.decode(bad, QUERY)
    bad = v.copy()
    bad[2] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        wire.decode(bad, QUERY)


def test_bounded_form_round_trips_clipped_sums() -> None:
    q = StatsQuery((-10.0, 0.0), (10.0, 5.0), bins=3, classes=2, minmax=False, clip=True)
    x = np.array([[1.0, 2.0], [-20.0, 4.0], [3.0, 9.0]])
    s = local_summary(x, np.array([0, 1, 1]), q)
    scale = feature_scale(q, 2)
    np.testing.assert_array_equal(scale, [10.0, 5.0])
    v = to_bounded(s, scale)
    assert np.abs(v[1:5]).max() <= 3  # 3 clipped rows of |u| <= 1
    back = from_bounded(v, scale, 3, 2)
    np.testing.assert_allclose(back.total, [1 - 10 + 3, 2 + 4 + 5])
    np.testing.assert_allclose(back.m2, s.m2, atol=1e-9)


def test_query_round_trips_and_refuses_malformed_json() -> None:
    q = StatsQuery((0.0, 1.0), (2.0, 3.0), bins=4, classes=3, minmax=False, clip=True)
    assert StatsQuery.from_json(q.to_json()) == q
    for text in (
        "{",
        '{"low": [0], "high": [1], "bins": "4", "classes": 0, "minmax": true}',
        '{"low": [1], "high": [0], "bins": 4, "classes": 0, "minmax": true, "clip": 1}',
    ):
        with pytest.raises(InstructionRejected, match="malformed statistics query"):
            StatsQuery.from_json(text)


def test_non_finite_feature_and_bad_label_are_named() -> None:
    x = np.array([[1.0, np.nan]])
    with pytest.raises(ValueError, match="feature 1 has non-finite"):
        local_summary(x, np.array([0]), QUERY)
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 4\)"):
        local_summary(np.ones((1, 2)), np.array([4]), QUERY)
