from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from murmura.errors import ConfigError, RegistryError
from murmura.topology import TOPOLOGIES, build_topology, describe

BUILT_IN: list[tuple[str, dict[str, Any]]] = [
    ("ring", {"n": 16}),
    ("torus", {"n": 16}),
    ("torus", {"n": 24, "rows": 4, "cols": 6}),
    ("complete", {"n": 12}),
    ("random_regular", {"n": 20, "d": 3, "seed": 1}),
    ("erdos_renyi", {"n": 20, "p": 0.2, "seed": 2}),
    ("small_world", {"n": 20, "k": 4, "p": 0.3, "seed": 3}),
    ("star", {"n": 9}),
    ("tree", {"edges": 2, "leaves": 6}),
]


@pytest.mark.parametrize(("name", "params"), BUILT_IN)
def test_builders_give_connected_graphs_on_0_to_n_minus_1(
    name: str, params: dict[str, Any]
) -> None:
    graph = build_topology(name, **params)
    assert isinstance(graph, nx.Graph)
    n = graph.number_of_nodes()
    assert sorted(graph.nodes) == list(range(n))
    assert nx.is_connected(graph)
    assert nx.number_of_selfloops(graph) == 0


def test_shapes_of_regular_topologies() -> None:
    assert all(d == 2 for _, d in build_topology("ring", n=7).degree())
    assert all(d == 4 for _, d in build_topology("torus", n=64).degree())
    assert all(d == 3 for _, d in build_topology("random_regular", n=10, d=3).degree())
    assert build_topology("complete", n=6).number_of_edges() == 15


def test_random_topologies_are_seeded() -> None:
    a = build_topology("erdos_renyi", n=30, p=0.15, seed=7)
    b = build_topology("erdos_renyi", n=30, p=0.15, seed=7)
    c = build_topology("erdos_renyi", n=30, p=0.15, seed=8)
    assert set(a.edges) == set(b.edges)
    assert set(a.edges) != set(c.edges)


def test_star_and_tree_roles() -> None:
    star = build_topology("star", n=5)
    assert star.nodes[0]["role"] == "server" and star.degree(0) == 4
    tree = build_topology("tree", edges=2, leaves=6)
    roles = nx.get_node_attributes(tree, "role")
    assert roles[0] == "root"
    assert [i for i, r in roles.items() if r == "edge"] == [1, 2]
    leaves = [i for i, r in roles.items() if r == "leaf"]
    assert len(leaves) == 6
    parents = [tree.nodes[i]["parent"] for i in leaves]
    assert parents.count(1) == parents.count(2) == 3
    assert all(tree.has_edge(i, tree.nodes[i]["parent"]) for i in leaves)


def test_describe_reports_size_degrees_and_gap() -> None:
    info = describe(build_topology("torus", n=16))
    assert info["n"] == 16 and info["edges"] == 32
    assert info["degree_min"] == info["degree_max"] == 4
    assert info["connected"] is True
    assert info["spectral_gap"] == pytest.approx(0.4)  # 1 - (1/5 + 2/5 * (1 + cos(pi/2)))


def test_unknown_topology_lists_valid_names() -> None:
    with pytest.raises(RegistryError, match="unknown topology 'hypercube'.*ring.*torus"):
        build_topology("hypercube", n=8)
    assert "ring" in TOPOLOGIES


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("random_regular", {"n": 5, "d": 3}, r"'random_regular'.*n=5, d=3"),
        ("random_regular", {"n": 5, "d": 5}, r"'random_regular'.*d=5"),
        ("erdos_renyi", {"n": 10, "p": 0.0}, r"'erdos_renyi'.*\(0, 1\].*p=0.0"),
        ("erdos_renyi", {"n": 10, "p": 1.5}, r"'erdos_renyi'.*p=1.5"),
        ("erdos_renyi", {"n": 10, "p": -0.1}, r"'erdos_renyi'.*p=-0.1"),
        ("small_world", {"n": 10, "k": 4, "p": 2.0}, r"'small_world'.*p=2.0"),
        ("small_world", {"n": 10, "k": 10, "p": 0.1}, r"'small_world'.*k=10"),
        ("ring", {"n": 2}, r"'ring'.*n=2"),
        ("torus", {"n": 10}, r"'torus'.*n=10"),
        ("torus", {"n": 16, "rows": 3, "cols": 5}, r"'torus'.*n=16.*3\*5"),
        ("torus", {"n": 16, "rows": 3}, r"'torus'.*n=16.*3"),
        ("complete", {"n": 1}, r"'complete'.*n=1"),
        ("tree", {"edges": 3, "leaves": 2}, r"'tree'.*leaves=2"),
        ("ring", {"n": 8, "p": 0.5}, r"'ring'.*unexpected.*'p'"),
    ],
)
def test_bad_parameters_name_topology_and_value(
    name: str, params: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        build_topology(name, **params)


def test_sparse_erdos_renyi_that_never_connects_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'erdos_renyi'.*no connected graph"):
        build_topology("erdos_renyi", n=50, p=0.01, tries=5)


def test_edge_list_reads_pairs_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "g.txt"
    path.write_text("# a square with a diagonal\n0 1\n1 2\n\n2 3  # last side\n3 0\n0 2\n")
    graph = build_topology("edge_list", path=path)
    assert sorted(graph.nodes) == [0, 1, 2, 3]
    assert graph.number_of_edges() == 5


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("0 1\n1 x\n", r":2: node ids must be integers"),
        ("0 1\n1 2 3\n", r":2: expected two node ids"),
        ("0 1\n\n2 2\n", r":3: self-loop"),
        ("0 -1\n", r":1: node ids must be >= 0"),
        ("0 1\n2 3\n", r"not connected \(2 components\)"),
        ("# nothing\n", r"has no edges"),
    ],
)
def test_edge_list_errors_name_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        build_topology("edge_list", path=str(path))
    assert str(path) in str(info.value)


def test_edge_list_missing_file_and_too_small_n(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        build_topology("edge_list", path=tmp_path / "absent.txt")
    path = tmp_path / "g.txt"
    path.write_text("0 1\n1 5\n")
    with pytest.raises(ConfigError, match="node 5, but n=4"):
        build_topology("edge_list", path=path, n=4)
