"""Metropolis-Hastings mixing weights, their spectral gap, and renormalisation on failures.

Metropolis-Hastings weights ``w_ij = 1 / (1 + max(d_i, d_j))`` on each edge, with the rest of
the row on the diagonal, give a symmetric doubly stochastic matrix from local degrees only
(Xiao & Boyd 2004, "Fast linear iterations for distributed averaging"). Gossip contracts
the distance to the average by ``1 - spectral_gap(W)`` per step in the long run.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import networkx as nx
import numpy as np
from numpy.typing import NDArray

MixingMatrix = NDArray[np.float64]
NeighbourWeights = dict[int, dict[int, float]]


def _check_nodes(graph: nx.Graph) -> int:
    """Return ``n`` after checking that the nodes are exactly ``0..n-1``."""
    n = int(graph.number_of_nodes())
    if set(graph.nodes) != set(range(n)):
        raise ValueError(f"graph nodes must be 0..{n - 1}, got {sorted(graph.nodes)[:10]}...")
    if any(u == v for u, v in graph.edges):
        raise ValueError("graph has self-loops; mixing weights need a simple graph")
    return n


def metropolis_hastings(graph: nx.Graph) -> MixingMatrix:
    """Dense ``(n, n)`` Metropolis-Hastings mixing matrix of ``graph`` (Xiao & Boyd 2004)."""
    n = _check_nodes(graph)
    degree = dict(graph.degree())
    w = np.zeros((n, n), dtype=np.float64)
    for u, v in graph.edges:
        w[u, v] = w[v, u] = 1.0 / (1.0 + max(degree[u], degree[v]))
    np.fill_diagonal(w, 1.0 - w.sum(axis=1))
    return w


def neighbour_weights(graph: nx.Graph) -> NeighbourWeights:
    """Per-node MH weights ``{node: {node: self weight, neighbour: weight, ...}}``.

    This is the local view a peer needs: its own row of the mixing matrix, computed from its
    neighbours' degrees. Each dict sums to one.
    """
    w = metropolis_hastings(graph)
    return {
        int(i): {int(i): float(w[i, i])} | {int(j): float(w[i, j]) for j in graph.neighbors(i)}
        for i in graph.nodes
    }


def renormalize(
    weights: Mapping[int, float], node: int, present: Collection[int]
) -> dict[int, float]:
    """Drop neighbours not in ``present``; their weight goes back to ``node`` itself.

    Keeps the row summing to one, so a peer whose neighbour timed out mixes with the rest
    and leans more on its own model instead of rescaling the others.
    """
    if node not in weights:
        raise ValueError(f"weights of node {node} have no self weight")
    kept = {j: float(w) for j, w in weights.items() if j == node or j in present}
    kept[node] += sum(float(w) for j, w in weights.items() if j not in kept)
    return kept


def without_nodes(w: MixingMatrix, missing: Collection[int]) -> MixingMatrix:
    """Mixing matrix when the ``missing`` nodes do not exchange this round.

    Each node's weight on a missing neighbour moves to its diagonal and a missing node keeps
    its own model (identity row), so the result stays symmetric and doubly stochastic.
    """
    out = np.array(w, dtype=np.float64, copy=True)
    idx = np.fromiter(sorted(set(missing)), dtype=np.int64)
    if idx.size == 0:
        return out
    if idx.min() < 0 or idx.max() >= out.shape[0]:
        raise ValueError(f"missing nodes {idx.tolist()} outside 0..{out.shape[0] - 1}")
    lost = out[:, idx].sum(axis=1)
    out[:, idx] = 0.0
    out[idx, :] = 0.0
    out[np.diag_indices_from(out)] += lost
    out[idx, idx] = 1.0
    return out


def spectral_gap(w: MixingMatrix) -> float:
    """``1 - |lambda_2|``: one minus the second-largest absolute eigenvalue of ``w``.

    Zero for a disconnected graph; one for the complete graph with uniform weights.
    """
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"mixing matrix must be square, got shape {w.shape}")
    if w.shape[0] < 2:
        return 1.0
    if np.allclose(w, w.T):
        eig = np.abs(np.linalg.eigvalsh(w))
    else:
        eig = np.abs(np.linalg.eigvals(w))
    second = float(np.sort(eig)[-2])
    return max(0.0, 1.0 - second)
