"""Partitioners: split sample indices across clients, each sample to exactly one client.

Each partitioner is a pure function ``(labels, num_clients, rng, **params) -> list of index
arrays``; the registry maps config names to them. Every partitioner checks that the dataset
can give each client what it needs (``check_fits``) before it draws anything, so an infeasible
``partition.num_clients`` fails at once, naming the limit, instead of after a long search.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from murmura.errors import ConfigError
from murmura.registry import Registry

Parts = list[NDArray[np.int64]]
Partitioner = Callable[..., Parts]
Needs = Callable[..., tuple[int, str]]  # (samples per client, what that is in its own terms)

log = logging.getLogger(__name__)
PARTITIONERS: Registry[Partitioner] = Registry("partitioner")
_MAX_REDRAWS = 1000


def check_fits(
    kind: str, num_clients: int, samples: int, per_client: int = 1, need: str = ""
) -> None:
    """Refuse ``num_clients`` when ``samples`` cannot give each client ``per_client`` samples.

    ``need`` says what a client needs in the partitioner's own terms (default: one sample).
    """
    if num_clients * per_client <= samples:
        return
    raise ConfigError(
        f"partition.num_clients = {num_clients} is too many for the {kind!r} partitioner: "
        f"the dataset has {samples} training samples and each client needs "
        f"{need or 'at least 1 sample'}, so at most {samples // per_client} clients; "
        "lower partition.num_clients"
    )


def _dirichlet_needs(min_size: int = 1, **_: Any) -> tuple[int, str]:
    """Samples per client the ``dirichlet`` partitioner needs, and how to say so."""
    return max(min_size, 1), f"min_size = {min_size} samples" if min_size > 1 else ""


def _shards_needs(classes_per_client: int = 2, **_: Any) -> tuple[int, str]:
    """Samples per client the ``shards`` partitioner needs, and how to say so."""
    return classes_per_client, f"classes_per_client = {classes_per_client} shards of 1+ sample"


def _one_sample(**_: Any) -> tuple[int, str]:
    """What any other partitioner needs per client: one sample."""
    return 1, ""


# what each partitioner needs per client, by its arguments (any other: one sample)
_NEEDS: dict[str, Needs] = {
    "dirichlet": _dirichlet_needs,
    "shards": _shards_needs,
}


@PARTITIONERS.register("iid")
def iid(labels: NDArray[np.int64], num_clients: int, rng: np.random.Generator) -> Parts:
    """Shuffle and cut into near-equal parts."""
    check_fits("iid", num_clients, len(labels))
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
    check_fits("dirichlet", num_clients, len(labels), *_dirichlet_needs(min_size))
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    for attempt in range(_MAX_REDRAWS):
        # sizes first: a draw that leaves a client short costs no per-client work
        shuffled, owners = [], []
        sizes = np.zeros(num_clients, dtype=np.int64)
        for idx in by_class:
            shuffled.append(rng.permutation(idx))
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = np.clip((np.cumsum(p)[:-1] * len(idx)).astype(np.int64), 0, len(idx))
            counts = np.diff(cuts, prepend=0, append=len(idx))
            owners.append(np.repeat(np.arange(num_clients), counts))
            sizes += counts
        short = int((sizes < min_size).sum())
        if short == 0:
            return _gather(np.concatenate(shuffled), np.concatenate(owners), sizes)
        if attempt == 0:  # say why it is searching: near the limit, few draws fit
            log.info(
                "dirichlet partition: a draw left %d of %d clients with < %d samples; "
                "redrawing (at most %d times)",
                short,
                num_clients,
                min_size,
                _MAX_REDRAWS,
            )
    raise ConfigError(
        f"dirichlet partition: no draw in {_MAX_REDRAWS} gave every one of {num_clients} clients "
        f">= {min_size} samples; raise alpha or lower num_clients"
    )


def _gather(
    samples: NDArray[np.int64], owners: NDArray[np.int64], sizes: NDArray[np.int64]
) -> Parts:
    """Each client's samples, sorted: ``samples[i]`` belongs to client ``owners[i]``."""
    order = np.lexsort((samples, owners))
    return [p.astype(np.int64) for p in np.split(samples[order], np.cumsum(sizes)[:-1])]


@PARTITIONERS.register("shards")
def shards(
    labels: NDArray[np.int64],
    num_clients: int,
    rng: np.random.Generator,
    classes_per_client: int = 2,
) -> Parts:
    """Pathological non-IID (McMahan et al. 2017): sort by label, deal k shards per client."""
    check_fits("shards", num_clients, len(labels), *_shards_needs(classes_per_client))
    num_shards = num_clients * classes_per_client
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
    check_fits("quantity", num_clients, n)
    share = rng.lognormal(0.0, sigma, num_clients)
    sizes = 1 + np.floor(share / share.sum() * (n - num_clients)).astype(np.int64)
    sizes[np.argmax(share)] += n - sizes.sum()
    cuts = np.cumsum(sizes)[:-1]
    return [np.sort(p).astype(np.int64) for p in np.split(rng.permutation(n), cuts)]


def partition(
    name: str, labels: NDArray[np.int64], num_clients: int, seed: int, **params: Any
) -> Parts:
    """Run the partitioner ``name`` with a generator seeded by ``seed``.

    What the partitioner needs per client (one sample; ``min_size``; ``classes_per_client``
    shards) is checked against the dataset's size here, before any work, for every
    partitioner (a registered one included).
    """
    if num_clients < 1:
        raise ConfigError(f"partition: num_clients must be >= 1, got {num_clients}")
    fn = PARTITIONERS.get(name)
    needs: Needs = _NEEDS.get(name, _one_sample)
    per_client, need = needs(**params)
    check_fits(name, num_clients, len(labels), per_client, need)
    return fn(np.asarray(labels), num_clients, np.random.default_rng(seed), **params)
