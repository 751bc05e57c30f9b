import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from murmura.aggregate.buffer import UpdateBuffer


@settings(max_examples=40, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 6), st.integers(1, 8)),
        elements=st.floats(-100, 100, width=32),
    ),
    st.lists(st.integers(1, 50), min_size=6, max_size=6),
)
def test_running_sum_equals_row_matrix_mean(x: np.ndarray, counts: list[int]) -> None:
    rows, sums = (
        UpdateBuffer(len(x), x.shape[1], keep_rows=True),
        UpdateBuffer(len(x), x.shape[1], keep_rows=False),
    )
    for i, u in enumerate(x):
        rows.add(f"n{i}", u, counts[i], {})
        sums.add(f"n{i}", u, counts[i], {})
    w = np.asarray(counts[: len(x)], np.float64)
    expected = (w[:, None] * x.astype(np.float64)).sum(0) / w.sum()
    np.testing.assert_allclose(rows.weighted_mean(), expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(sums.weighted_mean(), expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(rows.rows(), x)


def test_buffer_errors() -> None:
    buf = UpdateBuffer(1, 2)
    with pytest.raises(ValueError, match="no updates"):
        buf.weighted_mean()
    buf.add("a", np.zeros(2, np.float32), 1, {})
    with pytest.raises(ValueError, match="full"):
        buf.add("b", np.zeros(2, np.float32), 1, {})
    with pytest.raises(ValueError, match="running sum"):
        UpdateBuffer(1, 2, keep_rows=False).rows()


def test_running_sum_is_blockwise_and_bit_identical() -> None:
    """Adding and dividing block by block gives the bits of the whole-array formula."""
    from murmura.aggregate.buffer import BLOCK

    dim = 3 * BLOCK + 7  # a partial last block
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(dim).astype(np.float32) for _ in range(3)]
    buf = UpdateBuffer(3, dim, keep_rows=False)
    expected = np.zeros(dim, dtype=np.float64)
    for i, (x, n) in enumerate(zip(xs, (3, 11, 2**31 - 1), strict=True)):
        buf.add(f"n{i}", x, n, {})
        expected += np.float64(n) * x
    total = 3 + 11 + 2**31 - 1
    np.testing.assert_array_equal(buf.weighted_mean(), (expected / total).astype(np.float32))


def test_running_sum_makes_no_full_size_temporary() -> None:
    """Adding a 32 MB update or taking the mean allocates well under one update's size."""
    import tracemalloc

    dim = 8 << 20
    update = np.full(dim, 0.5, dtype=np.float32)
    buf = UpdateBuffer(2, dim, keep_rows=False)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        buf.add("a", update, 7, {})
        buf.add("b", update, 9, {})
        add_peak = tracemalloc.get_traced_memory()[1] - base
        mean = buf.weighted_mean()
        mean_peak = tracemalloc.get_traced_memory()[1] - base - mean.nbytes
    finally:
        tracemalloc.stop()
    # before: the float64 product was a 64 MB temporary, the float64 quotient another
    assert add_peak < 2 << 20, add_peak
    assert mean_peak < 2 << 20, mean_peak
    np.testing.assert_array_equal(mean, np.full(dim, 0.5, dtype=np.float32))
