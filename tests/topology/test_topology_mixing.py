from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.topology import (
    TOPOLOGIES,
    build_topology,
    metropolis_hastings,
    neighbour_weights,
    renormalize,
    spectral_gap,
    without_nodes,
)

DEFAULTS: dict[str, dict[str, Any]] = {
    "ring": {"n": 16},
    "torus": {"n": 36},
    "complete": {"n": 10},
    "random_regular": {"n": 24, "d": 4, "seed": 5},
    "erdos_renyi": {"n": 24, "p": 0.2, "seed": 5},
    "small_world": {"n": 24, "k": 4, "p": 0.2, "seed": 5},
    "star": {"n": 8},
    "tree": {"edges": 3, "leaves": 9},
}


def _built_in(name: str, tmp_path: Path) -> nx.Graph:
    if name == "edge_list":
        path = tmp_path / "g.txt"
        path.write_text("0 1\n1 2\n2 3\n3 4\n4 0\n0 2\n1 3\n")
        return build_topology("edge_list", path=path)
    return build_topology(name, **DEFAULTS[name])


def assert_valid_mixing(graph: nx.Graph, w: np.ndarray) -> None:
    n = graph.number_of_nodes()
    assert w.shape == (n, n)
    np.testing.assert_allclose(w, w.T, atol=1e-15)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert (w >= 0).all()
    off_graph = ~(nx.to_numpy_array(graph, nodelist=range(n)) > 0) & ~np.eye(n, dtype=bool)
    assert (w[off_graph] == 0).all()


@pytest.mark.parametrize("name", TOPOLOGIES.names())
def test_mh_weights_valid_for_every_built_in_topology(name: str, tmp_path: Path) -> None:
    graph = _built_in(name, tmp_path)
    w = metropolis_hastings(graph)
    assert_valid_mixing(graph, w)
    assert 0 < spectral_gap(w) <= 1


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), p=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_mh_weights_valid_on_any_graph(n: int, p: float, seed: int) -> None:
    graph = nx.gnp_random_graph(n, p, seed=seed)
    assert_valid_mixing(graph, metropolis_hastings(graph))


def test_mh_weight_formula_on_a_path() -> None:
    w = metropolis_hastings(nx.path_graph(3))  # degrees 1, 2, 1
    np.testing.assert_allclose(w[0], [2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(w[1], [1 / 3, 1 / 3, 1 / 3])


def test_neighbour_weights_are_the_rows_of_the_matrix() -> None:
    graph = build_topology("small_world", n=12, k=4, p=0.3, seed=1)
    w = metropolis_hastings(graph)
    local = neighbour_weights(graph)
    assert sorted(local) == list(range(12))
    for i, row in local.items():
        assert set(row) == {i, *graph.neighbors(i)}
        assert sum(row.values()) == pytest.approx(1.0)
        for j, wij in row.items():
            assert wij == pytest.approx(w[i, j])


def test_mixing_rejects_bad_node_labels() -> None:
    with pytest.raises(ValueError, match="0..2"):
        metropolis_hastings(nx.Graph([(1, 2), (2, 3)]))


def test_spectral_gap_extremes_and_known_values() -> None:
    assert spectral_gap(metropolis_hastings(nx.complete_graph(8))) == pytest.approx(1.0)
    disconnected = nx.Graph([(0, 1), (2, 3)])
    assert spectral_gap(metropolis_hastings(disconnected)) == pytest.approx(0.0, abs=1e-12)
    n = 20  # ring: MH weights 1/3, lambda_2 = 1/3 + 2/3 cos(2 pi / n)
    expected = 1 - (1 / 3 + 2 / 3 * np.cos(2 * np.pi / n))
    assert spectral_gap(metropolis_hastings(nx.cycle_graph(n))) == pytest.approx(expected)
    assert spectral_gap(np.eye(1)) == 1.0
    with pytest.raises(ValueError, match="square"):
        spectral_gap(np.ones((2, 3)))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(3, 25),
    p=st.floats(0.1, 1.0),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_missing_neighbours_renormalise_to_self(
    n: int, p: float, seed: int, data: st.DataObject
) -> None:
    graph = nx.gnp_random_graph(n, p, seed=seed)
    local = neighbour_weights(graph)
    node = data.draw(st.integers(0, n - 1))
    present = data.draw(st.sets(st.sampled_from(sorted(local[node]))))
    row = renormalize(local[node], node, present)
    assert sum(row.values()) == pytest.approx(1.0, abs=1e-12)
    assert all(v >= 0 for v in row.values())
    assert set(row) == ({node} | present) & set(local[node])
    lost = sum(v for j, v in local[node].items() if j not in row)
    assert row[node] == pytest.approx(local[node][node] + lost)
    for j in row.keys() - {node}:
        assert row[j] == local[node][j]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 20), seed=st.integers(0, 2**16), data=st.data())
def test_without_nodes_stays_doubly_stochastic(n: int, seed: int, data: st.DataObject) -> None:
    graph = nx.gnp_random_graph(n, 0.5, seed=seed)
    missing = data.draw(st.sets(st.integers(0, n - 1)))
    w = without_nodes(metropolis_hastings(graph), missing)
    alive = graph.subgraph(set(range(n)) - missing).copy()
    alive.add_nodes_from(range(n))
    assert_valid_mixing(alive, w)
    for m in missing:
        assert w[m, m] == 1.0


def test_renormalize_needs_self_weight_and_without_nodes_checks_range() -> None:
    with pytest.raises(ValueError, match="self weight"):
        renormalize({1: 0.5, 2: 0.5}, 0, {1})
    with pytest.raises(ValueError, match="outside"):
        without_nodes(np.eye(3), {3})
