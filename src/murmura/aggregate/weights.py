"""Client weights: capping any one client's share so an inflated example count cannot dominate."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def cap_weight_share(weights: NDArray[np.floating], max_share: float) -> NDArray[np.float64]:
    """Weights with no entry above ``max_share`` of their sum (water-filling).

    The capped entries all get the largest value ``c`` with ``c = max_share * sum(min(w, c))``;
    the others keep their weight. With ``max_share <= 1/n`` every client gets an equal weight.
    """
    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    if not 0 < max_share <= 1:
        raise ValueError(f"max_share must be in (0, 1], got {max_share}")
    if n == 0 or max_share >= 1:
        return w.copy()
    if max_share * n <= 1:
        return np.full(n, w.sum() / n)
    order = np.argsort(-w, kind="stable")
    desc = w[order]
    tail = np.concatenate([np.cumsum(desc[::-1])[::-1], [0.0]])  # tail[k] = sum(desc[k:])
    for k in range(n):  # k = number of capped clients
        cap = max_share * tail[k] / (1 - k * max_share) if k else max_share * tail[0]
        if desc[k] <= cap:
            out = w.copy()
            out[order[:k]] = cap
            return out
    raise AssertionError("unreachable: max_share * n > 1 guarantees a solution")
