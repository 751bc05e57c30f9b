import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from murmura.simtime.staleness import constant, hinge, make_staleness, polynomial

staleness = st.integers(min_value=0, max_value=10_000)
a_values = st.floats(min_value=0.0, max_value=5.0)
b_values = st.floats(min_value=0.0, max_value=50.0)


@given(staleness, a_values, b_values, st.sampled_from(["constant", "polynomial", "hinge"]))
def test_weights_are_one_when_fresh_never_increase_and_stay_positive(
    s: int, a: float, b: float, kind: str
) -> None:
    f = make_staleness(kind, a, b)
    assert f(0) == 1.0
    assert 0.0 < f(s + 1) <= f(s) <= 1.0


@given(staleness, a_values)
def test_polynomial_is_the_paper_formula(s: int, a: float) -> None:
    assert math.isclose(polynomial(a)(s), (1 + s) ** -a)


def test_known_values() -> None:
    assert polynomial(0.5)(3) == 0.5  # FedBuff's 1 / sqrt(1 + s)
    assert hinge(10.0, 4.0)(4) == 1.0 and hinge(10.0, 4.0)(5) == pytest.approx(1 / 11)
    assert constant(7) == 1.0


def test_negative_staleness_and_unknown_kind_are_refused() -> None:
    with pytest.raises(ValueError, match="staleness must be >= 0"):
        polynomial(0.5)(-1)
    with pytest.raises(ValueError, match="unknown staleness function 'linear'"):
        make_staleness("linear", 1.0, 1.0)
