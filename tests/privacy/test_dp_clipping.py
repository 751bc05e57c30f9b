import numpy as np
import pytest

from murmura.privacy.clipping import clip_rows, clip_vector, row_norms


def _updates(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = rng.choice([0.0, 0.01, 0.5, 3.0, 1e4], size=40)
    return (rng.normal(size=(40, 257)) * scales[:, None]).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("clip_norm", [0.1, 1.0, 7.5])
def test_every_row_is_within_the_bound_and_small_rows_are_untouched(
    seed: int, clip_norm: float
) -> None:
    updates = _updates(seed)
    before = updates.copy()
    clipped, norms = clip_rows(updates, clip_norm)
    assert np.array_equal(updates, before)  # not in place by default
    assert np.allclose(norms, np.linalg.norm(before.astype(np.float64), axis=1))
    assert (row_norms(clipped) <= clip_norm).all()
    small = norms <= clip_norm
    assert np.array_equal(clipped[small], before[small])
    big = ~small
    assert np.allclose(row_norms(clipped[big]), clip_norm, rtol=1e-5)
    # direction is kept: clipped rows are positive multiples of the originals
    cos = np.einsum("ij,ij->i", clipped[big], before[big]) / (row_norms(clipped[big]) * norms[big])
    assert np.allclose(cos, 1.0, atol=1e-5)


def test_inplace_overwrites_the_input() -> None:
    updates = _updates(3)
    out, _ = clip_rows(updates, 1.0, inplace=True)
    assert out is updates
    assert (row_norms(updates) <= 1.0).all()


def test_clip_vector_and_bad_arguments() -> None:
    v = np.full(100, 1.0, dtype=np.float32)
    clipped, norm = clip_vector(v, 5.0)
    assert norm == pytest.approx(10.0)
    assert np.linalg.norm(clipped) <= 5.0
    with pytest.raises(ValueError, match="clip_norm"):
        clip_rows(v[None, :], 0.0)
    with pytest.raises(ValueError, match="flat vector"):
        clip_vector(v[None, :], 1.0)
