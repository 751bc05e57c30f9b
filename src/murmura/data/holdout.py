"""Local held-out data: each client keeps a seeded share of its partition for evaluation.

Federated evaluation (``[evaluation] federated``) asks clients to evaluate the global model on
data they never train on. ``LocalHoldout`` wraps a ``FederatedDataset``: client ``cid`` of
``n`` samples holds out ``floor(fraction * n)`` of them, chosen by a generator seeded with
(seed, cid), before any training; ``client_train`` returns the rest. A client too small to
hold out one sample evaluates on nothing (it reports 0 examples and is left out of the mean).
The split depends only on (seed, cid, n), so a deployed worker holding partition ``i/n``
splits exactly as client ``i`` does in simulation.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from numpy.typing import NDArray

from murmura.data.federated import Batch, FederatedDataset
from murmura.errors import ConfigError
from murmura.seeding import derive_seed

_HOLDOUT = 0xD47A  # keeps this stream apart from the other per-client streams
Positions = NDArray[np.int64]


@runtime_checkable
class HeldOutData(Protocol):
    """A federated dataset whose clients also hold evaluation data they do not train on."""

    def client_eval(self, cid: int) -> Batch:
        """Inputs and targets client ``cid`` evaluates on (possibly empty)."""
        ...


def holdout_count(n: int, fraction: float) -> int:
    """How many of a client's ``n`` samples are held out: ``floor(fraction * n)``."""
    return math.floor(fraction * n + 1e-9)


def holdout_split(n: int, fraction: float, seed: int, cid: int) -> tuple[Positions, Positions]:
    """Sorted (train, eval) positions among a client's ``n`` samples; disjoint, covering all."""
    order = np.random.default_rng(derive_seed(seed, cid, _HOLDOUT)).permutation(n)
    k = holdout_count(n, fraction)
    return np.sort(order[k:]).astype(np.int64), np.sort(order[:k]).astype(np.int64)


class LocalHoldout:
    """``inner`` with ``fraction`` of every client's samples held out for local evaluation."""

    def __init__(self, inner: FederatedDataset, fraction: float, seed: int) -> None:
        if not 0 < fraction < 1:
            raise ConfigError(f"local held-out fraction must be in (0, 1), got {fraction}")
        self.inner, self.fraction, self.seed = inner, fraction, seed

    @property
    def num_clients(self) -> int:
        """How many clients hold data."""
        return self.inner.num_clients

    def _split(self, cid: int) -> tuple[Batch, Batch]:
        x, y = self.inner.client_train(cid)
        train, held = holdout_split(len(x), self.fraction, self.seed, cid)
        t, h = torch.from_numpy(train), torch.from_numpy(held)
        return (x[t], y[t]), (x[h], y[h])

    def client_train(self, cid: int) -> Batch:
        """The samples client ``cid`` trains on (its partition minus the held-out share)."""
        return self._split(cid)[0]

    def client_eval(self, cid: int) -> Batch:
        """The samples client ``cid`` evaluates on; empty when it is too small to hold any out."""
        return self._split(cid)[1]

    def client_size(self, cid: int) -> int:
        """Number of training examples of client ``cid``."""
        n = self.inner.client_size(cid)
        return n - holdout_count(n, self.fraction)

    def test(self) -> Batch:
        """The inner dataset's central test set."""
        return self.inner.test()


def hold_out(data: FederatedDataset, fraction: float | None, seed: int) -> FederatedDataset:
    """``data`` with ``fraction`` of each client held out, or unchanged when it is None."""
    return data if fraction is None else LocalHoldout(data, fraction, seed)
