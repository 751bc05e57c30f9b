"""Communication graphs for peer-to-peer and hierarchical runs, registered by name.

Every builder returns an undirected ``networkx.Graph`` on nodes ``0..n-1``; bad parameters
raise ``ConfigError`` naming the topology and the value. Random builders are seeded and
redraw until the graph is connected, since gossip on a disconnected graph never reaches
consensus (Lian et al. 2017, D-PSGD, assume a connected graph).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from murmura.errors import ConfigError
from murmura.registry import Registry
from murmura.topology.mixing import metropolis_hastings, spectral_gap

Builder = Callable[..., nx.Graph]

TOPOLOGIES: Registry[Builder] = Registry("topology")


def build_topology(name: str, **params: Any) -> nx.Graph:
    """Build the registered topology ``name``; unknown names or parameters are an error."""
    builder = TOPOLOGIES.get(name)
    try:
        inspect.signature(builder).bind(**params)
    except TypeError as exc:
        raise ConfigError(f"topology {name!r}: bad parameters {params}: {exc}") from None
    graph: nx.Graph = builder(**params)
    return graph


def describe(graph: nx.Graph) -> dict[str, Any]:
    """Summary to log at the start of a run: size, degrees and the MH spectral gap."""
    degrees = [int(d) for _, d in graph.degree()]
    n = graph.number_of_nodes()
    return {
        "n": n,
        "edges": graph.number_of_edges(),
        "degree_min": min(degrees, default=0),
        "degree_max": max(degrees, default=0),
        "connected": n > 0 and bool(nx.is_connected(graph)),
        "spectral_gap": spectral_gap(metropolis_hastings(graph)) if n > 0 else 0.0,
    }


def _need(ok: bool, topology: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"topology {topology!r}: {message}")


def _check_n(topology: str, n: int, minimum: int) -> None:
    _need(isinstance(n, int) and n >= minimum, topology, f"needs n >= {minimum} nodes, got n={n!r}")


def _check_p(topology: str, name: str, p: float, allow_zero: bool) -> None:
    low_ok = p >= 0 if allow_zero else p > 0
    interval = "[0, 1]" if allow_zero else "(0, 1]"
    _need(
        isinstance(p, int | float) and low_ok and p <= 1,
        topology,
        f"{name} must be in {interval}, got {name}={p!r}",
    )


def _draw_connected(
    topology: str, draw: Callable[[int], nx.Graph], seed: int, tries: int
) -> nx.Graph:
    """Call ``draw(seed_i)`` with seeds derived from ``seed`` until the graph is connected."""
    rng = np.random.default_rng(seed)
    for _ in range(tries):
        graph = draw(int(rng.integers(2**31 - 1)))
        if nx.is_connected(graph):
            return graph
    raise ConfigError(
        f"topology {topology!r}: no connected graph in {tries} draws (seed={seed}); "
        "raise the degree or edge probability"
    )


@TOPOLOGIES.register("ring")
def ring(n: int) -> nx.Graph:
    """Cycle on ``n >= 3`` nodes: node ``i`` talks to ``i - 1`` and ``i + 1``."""
    _check_n("ring", n, 3)
    return nx.cycle_graph(n)


def _torus_shape(n: int) -> tuple[int, int]:
    """Most square ``rows * cols == n`` with both sides at least 3."""
    for rows in range(math.isqrt(n), 2, -1):
        if n % rows == 0 and n // rows >= 3:
            return rows, n // rows
    raise ConfigError(
        f"topology 'torus': n={n} is not rows*cols with rows, cols >= 3; give rows and cols"
    )


@TOPOLOGIES.register("torus")
def torus(n: int, rows: int | None = None, cols: int | None = None) -> nx.Graph:
    """2-D periodic grid of ``rows x cols == n`` nodes, each with four neighbours."""
    _check_n("torus", n, 9)
    if rows is None and cols is None:
        rows, cols = _torus_shape(n)
    elif rows is None or cols is None:
        known = rows if rows is not None else cols
        assert known is not None
        _need(known > 0 and n % known == 0, "torus", f"n={n} is not a multiple of {known}")
        rows, cols = (known, n // known) if rows is not None else (n // known, known)
    _need(rows * cols == n, "torus", f"n={n} is not rows*cols={rows}*{cols}={rows * cols}")
    _need(rows >= 3 and cols >= 3, "torus", f"rows and cols must be >= 3, got {rows}x{cols}")
    grid = nx.grid_2d_graph(rows, cols, periodic=True)
    return nx.relabel_nodes(grid, {(r, c): r * cols + c for r, c in grid.nodes})


@TOPOLOGIES.register("complete")
def complete(n: int) -> nx.Graph:
    """Every pair of the ``n >= 2`` nodes is connected; gossip averages in one step."""
    _check_n("complete", n, 2)
    return nx.complete_graph(n)


@TOPOLOGIES.register("random_regular")
def random_regular(n: int, d: int, seed: int = 0, tries: int = 100) -> nx.Graph:
    """Build a connected random ``d``-regular graph; ``n * d`` must be even and ``1 <= d < n``."""
    _check_n("random_regular", n, 3)
    _need(isinstance(d, int) and 1 <= d < n, "random_regular", f"needs 1 <= d < n={n}, got d={d!r}")
    _need((n * d) % 2 == 0, "random_regular", f"n*d must be even, got n={n}, d={d}")
    _need(d >= 2, "random_regular", f"d=1 gives a perfect matching, never connected for n={n}")
    return _draw_connected(
        "random_regular", lambda s: nx.random_regular_graph(d, n, seed=s), seed, tries
    )


@TOPOLOGIES.register("erdos_renyi")
def erdos_renyi(n: int, p: float, seed: int = 0, tries: int = 100) -> nx.Graph:
    """Erdos-Renyi ``G(n, p)``, redrawn from ``seed`` until it is connected."""
    _check_n("erdos_renyi", n, 2)
    _check_p("erdos_renyi", "p", p, allow_zero=False)
    return _draw_connected("erdos_renyi", lambda s: nx.gnp_random_graph(n, p, seed=s), seed, tries)


@TOPOLOGIES.register("small_world")
def small_world(n: int, k: int, p: float, seed: int = 0, tries: int = 100) -> nx.Graph:
    """Build a connected Watts-Strogatz graph: ``k`` nearest neighbours, rewired with ``p``."""
    _check_n("small_world", n, 3)
    _need(isinstance(k, int) and 2 <= k < n, "small_world", f"needs 2 <= k < n={n}, got k={k!r}")
    _check_p("small_world", "p", p, allow_zero=True)
    return _draw_connected(
        "small_world", lambda s: nx.watts_strogatz_graph(n, k, p, seed=s), seed, tries
    )


@TOPOLOGIES.register("star")
def star(n: int) -> nx.Graph:
    """Node 0 (the server) linked to clients ``1..n-1``: the server-client case."""
    _check_n("star", n, 2)
    graph = nx.star_graph(n - 1)
    nx.set_node_attributes(graph, {i: "client" for i in range(1, n)} | {0: "server"}, "role")
    return graph


@TOPOLOGIES.register("tree")
def tree(edges: int, leaves: int) -> nx.Graph:
    """Three levels: root 0, edge aggregators ``1..edges``, then ``leaves`` workers.

    Workers are split over the edges in contiguous blocks as evenly as possible; each node
    has a ``role`` attribute (``root``, ``edge``, ``leaf``) and non-root nodes a ``parent``.
    """
    _need(isinstance(edges, int) and edges >= 1, "tree", f"needs edges >= 1, got edges={edges!r}")
    _need(
        isinstance(leaves, int) and leaves >= edges,
        "tree",
        f"needs leaves >= edges={edges}, got leaves={leaves!r}",
    )
    graph = nx.Graph()
    graph.add_node(0, role="root")
    for e in range(1, edges + 1):
        graph.add_node(e, role="edge", parent=0)
        graph.add_edge(0, e)
    first = edges + 1
    for i in range(leaves):
        parent = 1 + (i * edges) // leaves
        graph.add_node(first + i, role="leaf", parent=parent)
        graph.add_edge(parent, first + i)
    return graph


def _parse_edge(path: Path, lineno: int, line: str) -> tuple[int, int]:
    fields = line.split()
    where = f"topology 'edge_list': {path}:{lineno}"
    if len(fields) != 2:
        raise ConfigError(f"{where}: expected two node ids 'u v', got {line!r}")
    try:
        u, v = int(fields[0]), int(fields[1])
    except ValueError:
        raise ConfigError(f"{where}: node ids must be integers, got {line!r}") from None
    if u < 0 or v < 0:
        raise ConfigError(f"{where}: node ids must be >= 0, got {line!r}")
    if u == v:
        raise ConfigError(f"{where}: self-loop {u}-{v} is not allowed")
    return u, v


@TOPOLOGIES.register("edge_list")
def edge_list(path: str | Path, n: int | None = None) -> nx.Graph:
    """Graph from a text file of ``u v`` lines (blank lines and ``#`` comments skipped).

    Nodes are ``0..n-1`` (``n`` defaults to the largest id + 1); the graph must be connected.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"topology 'edge_list': cannot read {path}: {exc}") from None
    edges = [
        _parse_edge(path, lineno, line.split("#", 1)[0])
        for lineno, line in enumerate(text.splitlines(), start=1)
        if line.split("#", 1)[0].strip()
    ]
    _need(bool(edges), "edge_list", f"{path} has no edges")
    largest = max(max(u, v) for u, v in edges)
    size = largest + 1 if n is None else n
    _need(largest < size, "edge_list", f"{path} names node {largest}, but n={size}")
    graph = nx.Graph()
    graph.add_nodes_from(range(size))
    graph.add_edges_from(edges)
    parts = nx.number_connected_components(graph)
    _need(parts == 1, "edge_list", f"graph in {path} is not connected ({parts} components)")
    return graph
