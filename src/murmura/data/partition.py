"""Partitioners: split sample indices across clients, each sample to exactly one client.

Each partitioner is a pure function ``(labels, num_clients, rng, **params) -> list of index
arrays``; the registry maps config names to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from murmura.errors import ConfigError
from murmura.registry import Registry

Parts = list[NDArray[np.int64]]
Partitioner = Callable[..., Parts]

PARTITIONERS: Registry[Partitioner] = Registry("partitioner")
_MAX_REDRAWS = 1000


@PARTITIONERS.register("iid")
def iid(labels: NDArray[np.int64], num_clients: int, rng: np.random.Generator) -> Parts:
    """Shuffle and cut into near-equal parts."""
    return [np.sort(p) for p in np.array_split(rng.permutation(len(labels)), num_clients)]


@PARTITIONERS.register("dirichlet")
def dirichlet(
    labels: NDArray[np.int64],
    num_clients: int,
    rng: np.random.Generator,
    alpha: float = 0.5,
    min_size: int = 1,
) -> Parts:
    """Label skew (Hsu et al. 2019): per class, proportions p ~ Dir(alpha) cut its samples.

    The whole draw is repeated until every client has at least ``min_size`` samples.
    """
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    for _ in range(_MAX_REDRAWS):
        buckets: list[list[NDArray[np.int64]]] = [[] for _ in range(num_clients)]
        for idx in by_class:
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
            for client, chunk in enumerate(np.split(idx, cuts)):
                buckets[client].append(chunk)
        parts = [np.sort(np.concatenate(b)).astype(np.int64) for b in buckets]
        if min(len(p) for p in parts) >= min_size:
            return parts
    raise ConfigError(
        f"dirichlet partition: no draw in {_MAX_REDRAWS} gave every one of {num_clients} clients "
        f">= {min_size} samples; raise alpha or lower num_clients"
    )


@PARTITIONERS.register("shards")
def shards(
    labels: NDArray[np.int64],
    num_clients: int,
    rng: np.random.Generator,
    classes_per_client: int = 2,
) -> Parts:
    """Pathological non-IID (McMahan et al. 2017): sort by label, deal k shards per client."""
    num_shards = num_clients * classes_per_client
    if num_shards > len(labels):
        raise ConfigError(
            f"shards partition: {num_clients} clients x {classes_per_client} shards needs "
            f">= {num_shards} samples, the dataset has {len(labels)}"
        )
    order = np.argsort(labels, kind="stable")
    pieces = np.array_split(order, num_shards)
    deal = rng.permutation(num_shards).reshape(num_clients, classes_per_client)
    return [np.sort(np.concatenate([pieces[s] for s in row])).astype(np.int64) for row in deal]


@PARTITIONERS.register("quantity")
def quantity_skew(
    labels: NDArray[np.int64],
    num_clients: int,
    rng: np.random.Generator,
    sigma: float = 1.0,
) -> Parts:
    """Quantity skew: client sizes proportional to log-normal(0, sigma) draws, at least one each."""
    n = len(labels)
    if num_clients > n:
        raise ConfigError(f"quantity partition: {num_clients} clients but only {n} samples")
    share = rng.lognormal(0.0, sigma, num_clients)
    sizes = 1 + np.floor(share / share.sum() * (n - num_clients)).astype(np.int64)
    sizes[np.argmax(share)] += n - sizes.sum()
    cuts = np.cumsum(sizes)[:-1]
    return [np.sort(p).astype(np.int64) for p in np.split(rng.permutation(n), cuts)]


def partition(
    name: str, labels: NDArray[np.int64], num_clients: int, seed: int, **params: Any
) -> Parts:
    """Run the partitioner ``name`` with a generator seeded by ``seed``."""
    if num_clients < 1:
        raise ConfigError(f"partition: num_clients must be >= 1, got {num_clients}")
    fn = PARTITIONERS.get(name)
    return fn(np.asarray(labels), num_clients, np.random.default_rng(seed), **params)
