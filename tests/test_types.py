import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from murmura.types import Layout

shapes = st.lists(
    st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), min_size=1, max_size=5
)


@given(shapes)
def test_flatten_unflatten_round_trip(shape_list: list[tuple[int, ...]]) -> None:
    rng = np.random.default_rng(0)
    tensors = {f"t{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shape_list)}
    layout = Layout.of(tensors)
    flat = layout.flatten(tensors)
    assert flat.dtype == np.float32
    assert flat.shape == (sum(int(np.prod(s)) for s in shape_list),)
    back = layout.unflatten(flat)
    for name, arr in tensors.items():
        np.testing.assert_array_equal(back[name], arr)


def test_offsets_and_sizes() -> None:
    layout = Layout(("w", "b"), ((3, 2), (2,)))
    assert layout.sizes == (6, 2)
    assert layout.offsets == (0, 6)
    assert layout.size == 8
    parts = layout.unflatten(np.arange(8, dtype=np.float32))
    np.testing.assert_array_equal(parts["b"], [6, 7])


def test_layout_errors_name_the_tensor() -> None:
    layout = Layout(("w",), ((2, 2),))
    with pytest.raises(ValueError, match="'w' has shape"):
        layout.flatten({"w": np.zeros((3,), np.float32)})
    with pytest.raises(ValueError, match="missing"):
        layout.flatten({})
    with pytest.raises(ValueError, match="layout needs"):
        layout.unflatten(np.zeros(5, np.float32))


def test_metrics_json_has_no_non_finite_numbers() -> None:
    import json

    from murmura.types import RoundMetrics

    m = RoundMetrics(
        1, 2, train_loss=float("nan"), extra={"epsilon": float("inf"), "s": [float("-inf")]}
    )
    out = json.loads(json.dumps(m.to_json(), allow_nan=False))
    assert out["epsilon"] == "inf" and out["train_loss"] == "nan" and out["s"] == ["-inf"]
