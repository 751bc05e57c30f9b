import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.data.partition import PARTITIONERS, partition
from murmura.errors import ConfigError, RegistryError

labels_st = st.integers(20, 400).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(2, 10), st.integers(1, 10), st.integers(0, 2**16))
)


def _check_exact_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))


@settings(max_examples=30, deadline=None)
@given(labels_st, st.sampled_from(["iid", "dirichlet", "shards", "quantity"]))
def test_every_partition_covers_each_sample_exactly_once(
    args: tuple[int, int, int, int], kind: str
) -> None:
    n, classes, clients, seed = args
    labels = np.random.default_rng(seed).integers(0, classes, n)
    # min_size 0: any draw is valid, so coverage is checked on every input; the redraw for a
    # minimum size (and its error when none fits) has its own tests below
    by_kind = {"dirichlet": {"alpha": 5.0, "min_size": 0}, "shards": {"classes_per_client": 1}}
    params = by_kind.get(kind, {})
    parts = partition(kind, labels, clients, seed, **params)
    assert len(parts) == clients
    _check_exact_cover(parts, n)


def test_dirichlet_every_client_gets_min_size_and_small_alpha_skews_labels() -> None:
    labels = np.repeat(np.arange(10), 100)
    parts = partition("dirichlet", labels, 20, 0, alpha=0.1, min_size=2)
    assert min(len(p) for p in parts) >= 2
    dominant = [np.bincount(labels[p], minlength=10).max() / len(p) for p in parts]
    assert np.mean(dominant) > 0.5  # label skew: most of a client's data is one class
    iid = partition("iid", labels, 20, 0)
    assert np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in iid]) < 0.4


def test_dirichlet_refuses_a_minimum_size_no_draw_can_meet() -> None:
    labels = np.repeat(np.arange(2), 10)  # 20 samples cannot give 10 clients 3 each
    with pytest.raises(ConfigError, match="10 clients >= 3 samples"):
        partition("dirichlet", labels, 10, 0, alpha=5.0, min_size=3)


def test_shards_give_k_classes_per_client() -> None:
    labels = np.repeat(np.arange(10), 50)
    parts = partition("shards", labels, 10, 1, classes_per_client=2)
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)


def test_quantity_skew_sizes_vary() -> None:
    parts = partition("quantity", np.zeros(1000, dtype=np.int64), 10, 0, sigma=1.5)
    sizes = [len(p) for p in parts]
    assert min(sizes) >= 1 and max(sizes) > 3 * min(sizes)


def test_partitions_are_deterministic_for_a_seed() -> None:
    labels = np.random.default_rng(0).integers(0, 5, 300)
    a = partition("dirichlet", labels, 7, 3)
    b = partition("dirichlet", labels, 7, 3)
    c = partition("dirichlet", labels, 7, 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_bad_partitions_are_clear_errors() -> None:
    with pytest.raises(RegistryError, match="valid: dirichlet, iid, quantity, shards"):
        partition("nope", np.zeros(10, dtype=np.int64), 2, 0)
    with pytest.raises(ConfigError, match="needs >= 40 samples"):
        partition("shards", np.zeros(10, dtype=np.int64), 20, 0, classes_per_client=2)
    assert set(PARTITIONERS.names()) == {"iid", "dirichlet", "shards", "quantity"}
