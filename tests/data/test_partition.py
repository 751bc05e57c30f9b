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
    with pytest.raises(ConfigError, match=r"needs min_size = 3 samples, so at most 6 clients"):
        partition("dirichlet", labels, 10, 0, alpha=5.0, min_size=3)
    # enough samples in all, but alpha = 0.01 gives each class to one client or two
    with pytest.raises(ConfigError, match="no draw in 1000 gave every one of 10 clients >= 3"):
        partition("dirichlet", np.repeat(np.arange(2), 20), 10, 0, alpha=0.01, min_size=3)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("kind", "params", "limit"),
    [
        ("iid", {}, 455),
        ("dirichlet", {"alpha": 0.5}, 455),
        ("dirichlet", {"alpha": 0.5, "min_size": 5}, 91),
        ("shards", {"classes_per_client": 2}, 227),
        ("quantity", {"sigma": 1.0}, 455),
    ],
)
def test_a_million_clients_on_455_samples_is_refused_at_once(
    kind: str, params: dict[str, float], limit: int
) -> None:
    labels = np.arange(455) % 2  # as large as the dataset
    # for dirichlet the limit is necessary, not sufficient: near it, draws are searched
    for clients in (1_000_000, limit + 1):
        with pytest.raises(ConfigError) as err:
            partition(kind, labels, clients, 0, **params)
        message = str(err.value)
        assert f"partition.num_clients = {clients}" in message
        assert "455 training samples" in message and f"at most {limit} clients" in message
    if kind != "dirichlet":  # exactly at the limit, one sample (or shard) each
        assert len(partition(kind, labels, limit, 0, **params)) == limit


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
    with pytest.raises(ConfigError, match=r"2 shards of 1\+ sample, so at most 5 clients"):
        partition("shards", np.zeros(10, dtype=np.int64), 6, 0, classes_per_client=2)
    assert set(PARTITIONERS.names()) == {"iid", "dirichlet", "shards", "quantity"}
