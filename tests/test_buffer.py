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
