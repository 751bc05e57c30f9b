"""The job API's request rate: a token bucket per identity (``federation.rate``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.federation.rate import RequestLimiter, TokenBucket


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.01, 50.0),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=120),
)
def test_no_window_admits_more_than_burst_plus_rate_times_its_length(
    rate: float, burst: int, gaps: list[float]
) -> None:
    bucket, now, admitted = TokenBucket(rate, burst, burst, 0.0), 0.0, []
    for gap in gaps:
        now += gap
        if bucket.take(now) == 0.0:
            admitted.append(now)
    for i, start in enumerate(admitted):  # every window [start, end] that admitted calls
        for j in range(i, len(admitted)):
            assert j - i + 1 <= burst + rate * (admitted[j] - start) + 1e-6


@settings(max_examples=100, deadline=None)
@given(rate=st.floats(0.01, 50.0), burst=st.integers(1, 20))
def test_a_refused_caller_is_admitted_after_the_wait_it_is_told(rate: float, burst: int) -> None:
    bucket = TokenBucket(rate, burst, burst, 0.0)
    assert [bucket.take(0.0) for _ in range(burst)] == [0.0] * burst
    wait = bucket.take(0.0)
    assert wait == pytest.approx(1.0 / rate)
    assert bucket.take(wait * (1 + 1e-9)) == 0.0


def test_identities_have_buckets_of_their_own_and_their_number_is_bounded() -> None:
    now = [0.0]
    limiter = RequestLimiter(per_minute=60, burst=2, max_buckets=3, clock=lambda: now[0])
    assert [limiter.admit("alice") for _ in range(3)] == [0.0, 0.0, 1.0]
    assert limiter.admit("bob") == 0.0  # alice's calls do not spend bob's
    now[0] = 0.5
    assert limiter.admit("alice") == pytest.approx(0.5)
    now[0] = 1.0
    assert limiter.admit("alice") == 0.0  # one token a second at 60 a minute
    for name in ("carol", "dave", "erin"):
        limiter.admit(name)
    assert len(limiter) == 3


@pytest.mark.parametrize(("per_minute", "burst"), [(0.0, 1), (-1.0, 1), (60.0, 0)])
def test_a_limiter_that_would_admit_nothing_is_refused(per_minute: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        RequestLimiter(per_minute, burst)
