"""The SecAgg+ communication graph: a Harary graph H(n, k) on randomly permuted clients.

Bell et al. 2020 (section 3) replace SecAgg's complete graph with a sparse random graph of
degree k = O(log n): each client masks with, and shares its secrets among, only its k
neighbours. We use their construction, a Harary graph (a ring where each node links to the
k/2 nearest nodes on each side) over a uniformly random relabelling of the clients, which is
k-regular and symmetric by construction. The permutation comes from a public seed: the graph
is no secret, every party recomputes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType

import numpy as np


@lru_cache(maxsize=8)
def neighbour_graph(num_clients: int, degree: int, seed: int) -> Mapping[int, tuple[int, ...]]:
    """Sorted neighbours of each client 0..n-1 in a randomly permuted Harary graph H(n, k).

    ``degree`` must be even, or ``n - 1`` for the complete graph (plain SecAgg). The result is
    read-only and cached: every simulated client of a round asks for the same graph.
    """
    n, k = num_clients, degree
    if not 1 <= k <= n - 1 or (k % 2 and k != n - 1):
        raise ValueError(f"degree must be even in [2, {n - 1}] or equal to {n - 1}, got {k}")
    if k == n - 1:
        return MappingProxyType({u: tuple(v for v in range(n) if v != u) for u in range(n)})
    order = np.random.default_rng(seed).permutation(n)
    links: dict[int, set[int]] = {u: set() for u in range(n)}
    for pos in range(n):
        u = int(order[pos])
        for step in range(1, k // 2 + 1):
            v = int(order[(pos + step) % n])
            links[u].add(v)
            links[v].add(u)
    return MappingProxyType({u: tuple(sorted(vs)) for u, vs in links.items()})
