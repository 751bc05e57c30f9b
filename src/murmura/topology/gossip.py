"""Pure gossip math on stacked peer models ``X`` of shape ``(n, d)``, one row per peer.

A synchronous step ``X <- W @ X`` is the mixing half of D-PSGD (Lian et al. 2017); with a
doubly stochastic ``W`` it keeps the average and contracts towards it. Random matchings
give time-varying pairwise averaging (Boyd et al. 2006, "Randomized gossip algorithms");
clipped gossip bounds what a Byzantine neighbour can do (He, Karimireddy & Jaggi 2022).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import networkx as nx
import numpy as np
from numpy.typing import NDArray

from murmura.aggregate import make_aggregator
from murmura.topology.mixing import MixingMatrix

Matrix = NDArray[np.floating]
Vector = NDArray[np.floating]
AggregateFn = Callable[[NDArray[np.float32], NDArray[np.float32]], NDArray[np.float32]]


def _check_square(x: Matrix, w: MixingMatrix) -> None:
    if x.ndim != 2 or w.shape != (x.shape[0], x.shape[0]):
        raise ValueError(f"need X of shape (n, d) and W of shape (n, n), got {x.shape}, {w.shape}")


def gossip_step(x: Matrix, w: MixingMatrix) -> Matrix:
    """One synchronous gossip step ``W @ X``, returned in ``X``'s dtype."""
    _check_square(x, w)
    out: Matrix = np.asarray(w @ x, dtype=x.dtype)
    return out


def gossip_average(x: Matrix, w: MixingMatrix, steps: int) -> Matrix:
    """Run ``steps`` synchronous gossip steps at once: ``W^steps @ X``."""
    _check_square(x, w)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    out: Matrix = np.asarray(np.linalg.matrix_power(w, steps) @ x, dtype=x.dtype)
    return out


def consensus_distance(x: Matrix) -> float:
    """Mean squared Euclidean distance of the rows of ``x`` to their average."""
    x64 = np.asarray(x, dtype=np.float64)
    if x64.ndim != 2 or x64.shape[0] == 0:
        raise ValueError(f"need a non-empty (n, d) matrix, got shape {x64.shape}")
    diff = x64 - x64.mean(axis=0)
    return float(np.mean(np.sum(diff * diff, axis=1)))


def random_pairs(
    n: int, rng: np.random.Generator, graph: nx.Graph | None = None
) -> list[tuple[int, int]]:
    """Draw a random matching of ``0..n-1``, restricted to ``graph``'s edges when one is given.

    Without a graph every node is paired except one when ``n`` is odd; on a graph the
    matching is maximal (greedy over the edges in random order).
    """
    if graph is None:
        order = rng.permutation(n)
        return [(int(order[i]), int(order[i + 1])) for i in range(0, n - 1, 2)]
    edges = list(graph.edges)
    used: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for k in rng.permutation(len(edges)):
        u, v = (int(a) for a in edges[int(k)])
        if u not in used and v not in used:
            used.update((u, v))
            pairs.append((u, v))
    return pairs


def matching_matrix(n: int, pairs: Sequence[tuple[int, int]]) -> MixingMatrix:
    """Mixing matrix that averages each matched pair (weights 1/2) and leaves others alone."""
    w = np.eye(n, dtype=np.float64)
    seen: set[int] = set()
    for u, v in pairs:
        if u == v or u in seen or v in seen:
            raise ValueError(f"pairs are not a matching: node repeated at ({u}, {v})")
        seen.update((u, v))
        w[u, u] = w[v, v] = w[u, v] = w[v, u] = 0.5
    return w


def random_matching(
    n: int, rng: np.random.Generator, graph: nx.Graph | None = None
) -> MixingMatrix:
    """Mixing matrix of a fresh random matching, for time-varying graphs (Boyd et al. 2006)."""
    return matching_matrix(n, random_pairs(n, rng, graph))


def clip(v: Vector, tau: float) -> Vector:
    """``v`` scaled down to Euclidean norm ``tau`` if it is longer; rows clipped separately."""
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    scale = np.ones_like(norms)
    long = norms > tau
    scale[long] = tau / norms[long]
    out: Vector = np.asarray(v * scale, dtype=v.dtype)
    return out


def clipped_mix(own: Vector, neighbours: Matrix, weights: Vector, tau: float) -> Vector:
    """One node's ClippedGossip update ``x_i + sum_j w_ij clip(x_j - x_i, tau)``.

    ``weights`` are the node's weights on its neighbours (rows of ``neighbours``), without the
    self weight. A neighbour, however far, moves the node by at most ``tau * w_ij``
    (He, Karimireddy & Jaggi 2022, "Byzantine-robust decentralized learning via ClippedGossip").
    """
    if tau <= 0:
        raise ValueError(f"clipping radius tau must be > 0, got {tau}")
    if neighbours.ndim != 2 or neighbours.shape[1:] != own.shape or len(weights) != len(neighbours):
        raise ValueError(
            f"need neighbours (k, {own.shape[0]}) and k weights, "
            f"got {neighbours.shape} and {len(weights)}"
        )
    if neighbours.shape[0] == 0:
        return own.copy()
    diffs = clip(np.asarray(neighbours, dtype=np.float64) - own, tau)
    step = np.asarray(weights, dtype=np.float64) @ diffs
    out: Vector = np.asarray(own + step, dtype=own.dtype)
    return out


def adaptive_tau(own: Vector, neighbours: Matrix, weights: Vector, clipped_weight: float) -> float:
    """Smallest radius that clips at most ``clipped_weight`` of the neighbours' total weight.

    Set ``clipped_weight`` to the weight a node may give to Byzantine neighbours: the
    farthest neighbours up to that weight are clipped, the rest pass unchanged, in the spirit
    of the adaptive radius of He, Karimireddy & Jaggi (2022); a fixed ``tau`` needs tuning.
    """
    if not 0 <= clipped_weight < 1:
        raise ValueError(f"clipped_weight must be in [0, 1), got {clipped_weight}")
    dist = np.linalg.norm(np.asarray(neighbours, dtype=np.float64) - own, axis=1)
    order = np.argsort(-dist, kind="stable")
    cum = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    k = int(np.searchsorted(cum, clipped_weight, side="right"))  # farthest k may be clipped
    tiny = float(np.finfo(np.float64).tiny)
    return tiny if k >= len(order) else max(float(dist[order[k]]), tiny)


def clipped_gossip(x: Matrix, w: MixingMatrix, tau: float) -> Matrix:
    """ClippedGossip for all peers at once: row ``i`` gets ``clipped_mix`` over its neighbours."""
    _check_square(x, w)
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        nbrs = np.flatnonzero(w[i])
        nbrs = nbrs[nbrs != i]
        out[i] = clipped_mix(x[i], x[nbrs], w[i, nbrs], tau)
    return out


def robust_neighbourhood_mix(
    own: Vector,
    neighbours: Matrix,
    rule: AggregateFn | str,
    weights: Vector | None = None,
) -> Vector:
    """Apply an aggregation rule from ``murmura.aggregate`` to own model plus neighbours'.

    Row 0 of the stacked matrix is ``own``; ``weights`` (self first, then neighbours) default
    to uniform. ``rule`` is an ``Aggregator`` (any ``(updates, weights) -> vector`` callable)
    or a registered name, built with default parameters.
    """
    agg: AggregateFn = make_aggregator(rule) if isinstance(rule, str) else rule
    stacked = np.vstack([own[None, :], neighbours]).astype(np.float32, copy=False)
    if weights is None:
        w = np.ones(stacked.shape[0], dtype=np.float32)
    else:
        w = np.asarray(weights, dtype=np.float32)
    if w.shape != (stacked.shape[0],):
        raise ValueError(f"need {stacked.shape[0]} weights (self first), got shape {w.shape}")
    out: Vector = np.asarray(agg(stacked, w), dtype=own.dtype)
    return out
