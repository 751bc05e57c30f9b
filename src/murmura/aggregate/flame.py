"""FLAME (Nguyen et al. 2022, "FLAME: Taming Backdoors in Federated Learning").

Three steps against backdoors: cluster the updates by cosine distance with HDBSCAN
(``min_cluster_size = n/2 + 1``, ``min_samples = 1``, as the paper's code) and keep the
majority cluster, so that poisoned updates pointing elsewhere are dropped; clip the admitted
updates to the median L2 norm of all updates, so that a scaled one is bounded; average them and
add ``N(0, (lam * S)^2)`` with ``S`` that median (``lam = 0.001``, the paper's value for
image classification). The paper clusters the local models; the rule sees their deltas from
the same global model, and the cosine distances are taken between those.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from murmura.aggregate.base import AGGREGATORS, Aggregator, Matrix, Rule, Vector
from murmura.aggregate.clipping import check_positive
from murmura.aggregate.distances import combine, gram, row_squared_norms
from murmura.aggregate.noise import gaussian_noise
from murmura.errors import AggregationError


def cosine_distances(updates: Matrix) -> NDArray[np.float64]:
    """``1 - cos(x_i, x_j)`` for every pair; a zero row is at distance 1 from every other."""
    g = gram(updates)
    norms = np.sqrt(np.maximum(np.diag(g), 0.0))
    denom = np.outer(norms, norms)
    cos = np.divide(g, denom, out=np.zeros_like(g), where=denom > 0)
    dist: NDArray[np.float64] = np.clip(1.0 - cos, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    return dist


def flame_admitted(updates: Matrix) -> NDArray[np.bool_]:
    """The rows of the majority cosine cluster (HDBSCAN, ``min_cluster_size = n // 2 + 1``).

    When HDBSCAN finds no cluster (or ``n < 3``), every row is admitted: clipping and noise
    still bound them.
    """
    n = updates.shape[0]
    if n < 3:
        return np.ones(n, dtype=bool)
    from sklearn.cluster import HDBSCAN

    labels = HDBSCAN(
        min_cluster_size=n // 2 + 1,
        min_samples=1,
        metric="precomputed",
        allow_single_cluster=True,
        copy=True,
    ).fit_predict(cosine_distances(updates))
    admitted: NDArray[np.bool_] = labels != -1
    return admitted if admitted.any() else np.ones(n, dtype=bool)


def flame(updates: Matrix, weights: Vector, lam: float = 0.001, seed: int = 0) -> Vector:
    """Mean of the admitted updates clipped to the median norm, plus ``N(0, (lam S)^2)``.

    ``weights`` are ignored, as in the paper: a claimed example count would let a poisoned
    update buy back the influence that clipping took away.
    """
    check_positive("flame", "lam", lam)
    n = updates.shape[0]
    if n < 1:
        raise AggregationError("flame needs n >= 1 client; got n = 0")
    admitted = flame_admitted(updates)
    norms = np.sqrt(row_squared_norms(updates))
    s = float(np.median(norms))
    scale = np.divide(s, norms, out=np.ones(n), where=norms > s)
    coef = np.where(admitted, scale, 0.0) / admitted.sum()
    out: Vector = combine(coef, updates) + gaussian_noise(updates, lam * s, seed)
    return out


@AGGREGATORS.register("flame")
def _flame_rule(lam: float = 0.001, seed: int = 0) -> Aggregator:
    check_positive("flame", "lam", lam)
    return Rule("flame", flame, {"lam": lam, "seed": int(seed)})
