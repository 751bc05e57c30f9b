import math
from typing import Any

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.aggregate import Rule
from murmura.errors import RegistryError
from murmura.topology import (
    adaptive_tau,
    build_topology,
    clip,
    clipped_gossip,
    clipped_mix,
    consensus_distance,
    gossip_average,
    gossip_step,
    matching_matrix,
    metropolis_hastings,
    random_matching,
    random_pairs,
    robust_neighbourhood_mix,
    spectral_gap,
)

GRAPHS: list[tuple[str, dict[str, Any]]] = [
    ("ring", {"n": 16}),
    ("ring", {"n": 64}),
    ("torus", {"n": 16}),
    ("torus", {"n": 64}),
    ("torus", {"n": 48, "rows": 6, "cols": 8}),
    ("complete", {"n": 16}),
    ("complete", {"n": 64}),
]


def _start(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


@pytest.mark.parametrize(("name", "params"), GRAPHS)
def test_gossip_converges_to_exact_average_and_keeps_it(name: str, params: dict[str, Any]) -> None:
    w = metropolis_hastings(build_topology(name, **params))
    x = _start(params["n"])
    target = x.mean(axis=0)
    lam = 1 - spectral_gap(w)
    steps = 1 if lam < 1e-9 else math.ceil(math.log(1e-9) / math.log(lam))
    for _ in range(steps):
        x = gossip_step(x, w)
        np.testing.assert_allclose(x.mean(axis=0), target, atol=1e-12)
    np.testing.assert_allclose(x, np.broadcast_to(target, x.shape), atol=1e-5)


@pytest.mark.parametrize(("name", "params"), [g for g in GRAPHS if g[0] != "complete"])
def test_decay_ratio_matches_spectral_gap(name: str, params: dict[str, Any]) -> None:
    w = metropolis_hastings(build_topology(name, **params))
    lam = 1 - spectral_gap(w)
    x = _start(params["n"], seed=1)
    # Run until the norm has shrunk by ~1e-7: the faster modes are gone by then, and the
    # error is still far above float64 round-off.
    steps = math.ceil(math.log(1e-7) / math.log(lam))
    window = steps // 4
    norms = []
    for _ in range(steps):
        norms.append(np.linalg.norm(x - x.mean(axis=0)))
        x = gossip_step(x, w)
    ratio = (norms[-1] / norms[-1 - window]) ** (1 / window)
    assert ratio == pytest.approx(lam, rel=2e-3)


def test_complete_graph_averages_in_one_step() -> None:
    w = metropolis_hastings(nx.complete_graph(20))
    x = gossip_step(_start(20), w)
    assert consensus_distance(x) == pytest.approx(0.0, abs=1e-24)


def test_gossip_average_equals_repeated_steps_and_keeps_float32() -> None:
    w = metropolis_hastings(build_topology("torus", n=64))
    x = _start(64, d=5, seed=3).astype(np.float32)
    y = x
    for _ in range(25):
        y = gossip_step(y, w)
    z = gossip_average(x, w, 25)
    assert z.dtype == y.dtype == np.float32
    np.testing.assert_allclose(z, y, atol=1e-5)
    np.testing.assert_array_equal(gossip_average(x, w, 0), x)
    done = gossip_average(x, w, 400)
    np.testing.assert_allclose(done, np.broadcast_to(x.mean(axis=0), x.shape), atol=1e-5)
    with pytest.raises(ValueError, match="steps"):
        gossip_average(x, w, -1)
    with pytest.raises(ValueError, match="shape"):
        gossip_step(x[:10], w)


def test_consensus_distance_value() -> None:
    x = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 3.0]])
    # mean (1, 1): squared distances 2, 2, 4
    assert consensus_distance(x) == pytest.approx(8 / 3)
    assert consensus_distance(np.ones((4, 3))) == 0.0


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 30), seed=st.integers(0, 2**16))
def test_consensus_distance_never_grows_under_mh_gossip(n: int, seed: int) -> None:
    w = metropolis_hastings(nx.gnp_random_graph(n, 0.3, seed=seed))
    x = _start(n, seed=seed)
    before = consensus_distance(x)
    for _ in range(5):
        x = gossip_step(x, w)
        after = consensus_distance(x)
        assert after <= before * (1 + 1e-12) + 1e-24
        before = after


def _check_matching(n: int, pairs: list[tuple[int, int]], graph: nx.Graph | None) -> None:
    flat = [v for pair in pairs for v in pair]
    assert len(flat) == len(set(flat))
    assert all(0 <= v < n for v in flat)
    if graph is None:
        assert len(pairs) == n // 2
        return
    assert all(graph.has_edge(u, v) for u, v in pairs)
    matched = set(flat)  # maximal: every edge touches a matched node
    assert all(u in matched or v in matched for u, v in graph.edges)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 60), seed=st.integers(0, 2**16), on_graph=st.booleans())
def test_random_matchings_are_valid(n: int, seed: int, on_graph: bool) -> None:
    rng = np.random.default_rng(seed)
    graph = nx.gnp_random_graph(n, 0.2, seed=seed) if on_graph else None
    pairs = random_pairs(n, rng, graph)
    _check_matching(n, pairs, graph)
    w = matching_matrix(n, pairs)
    np.testing.assert_array_equal(w, w.T)
    np.testing.assert_allclose(w.sum(axis=0), 1.0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert set(np.unique(w)) <= {0.0, 0.5, 1.0}
    for u, v in pairs:
        assert w[u, v] == w[u, u] == 0.5


def test_random_matching_mixing_averages_pairs_and_varies() -> None:
    rng = np.random.default_rng(0)
    w1, w2 = random_matching(10, rng), random_matching(10, rng)
    assert not np.array_equal(w1, w2)
    x = _start(10)
    y = gossip_step(x, w1)
    np.testing.assert_allclose(y.mean(axis=0), x.mean(axis=0))
    for _ in range(300):  # randomized gossip (Boyd et al. 2006) still reaches the average
        y = gossip_step(y, random_matching(10, rng))
    assert consensus_distance(y) < 1e-10
    with pytest.raises(ValueError, match="not a matching"):
        matching_matrix(4, [(0, 1), (1, 2)])


def test_clip_scales_long_rows_only() -> None:
    v = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    out = clip(v, 1.0)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]])


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    tau=st.floats(0.01, 10.0),
    far=st.floats(1e2, 1e8),
    k=st.integers(1, 6),
)
def test_clipped_gossip_bounds_a_byzantine_neighbour(
    seed: int, tau: float, far: float, k: int
) -> None:
    rng = np.random.default_rng(seed)
    d = 6
    own = rng.normal(size=d)
    honest = own + rng.normal(size=(k, d)) * (tau / (4 * math.sqrt(d)))
    byzantine = own + far * rng.normal(size=d) / math.sqrt(d) + far
    weights = rng.dirichlet(np.ones(k + 2))[1:]  # first share is the self weight
    with_byz = clipped_mix(own, np.vstack([honest, byzantine]), weights, tau)
    without = clipped_mix(own, np.vstack([honest, own]), weights, tau)
    assert np.linalg.norm(with_byz - without) <= tau * weights[-1] * (1 + 1e-9)


def test_clipped_gossip_on_a_ring_with_one_byzantine_peer() -> None:
    n, tau, byz = 12, 0.5, 5
    w = metropolis_hastings(nx.cycle_graph(n))
    x = np.zeros((n, 4))
    x[byz] = 1e6
    robust = clipped_gossip(x, w, tau)
    plain = gossip_step(x, w)
    for i in (byz - 1, byz + 1):
        assert np.linalg.norm(robust[i]) <= tau * w[i, byz] + 1e-12
        assert np.linalg.norm(plain[i]) > 1e5
    far_from_byz = [i for i in range(n) if abs(i - byz) > 1]
    np.testing.assert_array_equal(robust[far_from_byz], 0.0)


def test_adaptive_tau_clips_only_the_far_byzantine_weight() -> None:
    own = np.zeros(2)
    neighbours = np.array([[1.0, 0.0], [0.0, 2.0], [500.0, 0.0], [0.0, 3.0]])
    weights = np.array([0.2, 0.2, 0.25, 0.2])
    tau = adaptive_tau(own, neighbours, weights, clipped_weight=0.25)
    assert tau == pytest.approx(3.0)  # the Byzantine row at 500 is clipped, honest rows pass
    mixed = clipped_mix(own, neighbours, weights, tau)
    np.testing.assert_allclose(mixed, [0.2 + 0.75, 0.4 + 0.6])
    assert adaptive_tau(own, neighbours, weights, 0.0) == pytest.approx(500.0)
    assert adaptive_tau(own, neighbours, weights, 0.9) < 1e-300  # everything may be clipped
    with pytest.raises(ValueError, match="clipped_weight"):
        adaptive_tau(own, neighbours, weights, 1.0)


def test_clipped_gossip_without_clipping_is_plain_gossip() -> None:
    w = metropolis_hastings(build_topology("torus", n=16))
    x = _start(16)
    np.testing.assert_allclose(clipped_gossip(x, w, 1e9), gossip_step(x, w), atol=1e-12)
    with pytest.raises(ValueError, match="tau"):
        clipped_gossip(x, w, 0.0)
    own = x[0]
    np.testing.assert_array_equal(clipped_mix(own, np.empty((0, 8)), np.empty(0), 1.0), own)


def _coordinate_median(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.asarray(np.median(updates, axis=0), dtype=np.float32)


def test_robust_neighbourhood_mix_applies_aggregators() -> None:
    own = np.zeros(3, dtype=np.float32)
    neighbours = np.array([[1, 1, 1], [2, 2, 2], [1e6, -1e6, 1e6]], dtype=np.float32)
    mean = robust_neighbourhood_mix(own, neighbours, "weighted_mean")
    np.testing.assert_allclose(mean, np.vstack([own, neighbours]).mean(axis=0), rtol=1e-6)
    weighted = robust_neighbourhood_mix(
        own, neighbours, "weighted_mean", weights=np.array([1, 1, 2, 0], dtype=np.float32)
    )
    np.testing.assert_allclose(weighted, [1.25, 1.25, 1.25])
    median = Rule("median", _coordinate_median)
    robust = robust_neighbourhood_mix(own, neighbours, median)
    np.testing.assert_allclose(robust, [1.5, 0.5, 1.5])  # median of 0, 1, 2, +-1e6
    assert robust.dtype == np.float32


def test_robust_neighbourhood_mix_errors() -> None:
    own = np.zeros(2, dtype=np.float32)
    nbrs = np.ones((2, 2), dtype=np.float32)
    with pytest.raises(RegistryError, match="unknown aggregator 'nope'"):
        robust_neighbourhood_mix(own, nbrs, "nope")
    with pytest.raises(ValueError, match="3 weights"):
        robust_neighbourhood_mix(own, nbrs, "weighted_mean", weights=np.ones(2))
