"""The ``synthetic`` task: Synthetic(alpha, beta) of Li et al. 2020 (FedProx), workload W2.

Each client's data comes from its own seeded generator, made on demand, so registering many
clients costs only their sizes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn import functional

from murmura.data.federated import Batch
from murmura.errors import ConfigError
from murmura.seeding import derive_seed

DIM, CLASSES = 60, 10
_SIGMA_STD = np.arange(1, DIM + 1, dtype=np.float64) ** (-1.2 / 2)


def synthetic_client(
    alpha: float, beta: float, seed: int, cid: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """All samples of client ``cid``: x ~ N(v_k, diag(j^-1.2)), y = argmax(x W_k + b_k)."""
    rng = np.random.default_rng(derive_seed(seed, cid))
    size = int(np.floor(rng.lognormal(4, 2))) + 50
    u_k, b_shift = rng.normal(0, alpha), rng.normal(0, beta)
    w = rng.normal(u_k, 1, (DIM, CLASSES))
    b = rng.normal(u_k, 1, CLASSES)
    v = rng.normal(b_shift, 1, DIM)
    x = rng.normal(v, _SIGMA_STD, (size, DIM))
    y = np.argmax(x @ w + b, axis=1)
    return x.astype(np.float32), y.astype(np.int64)


class SyntheticFederatedDataset:
    """Clients generated lazily; each keeps ``test_fraction`` of its samples held out."""

    def __init__(
        self,
        num_clients: int,
        alpha: float,
        beta: float,
        seed: int,
        test_fraction: float,
        eval_clients: int | None,
    ) -> None:
        self._n, self._alpha, self._beta, self._seed = num_clients, alpha, beta, seed
        self._test_fraction = test_fraction
        self._eval_clients = num_clients if eval_clients is None else min(eval_clients, num_clients)
        self._client = lru_cache(maxsize=1024)(self._split_client)

    @property
    def num_clients(self) -> int:
        """How many clients hold data."""
        return self._n

    def _split_client(self, cid: int) -> tuple[Batch, Batch]:
        x, y = synthetic_client(self._alpha, self._beta, self._seed, cid)
        n_train = len(x) - int(round(self._test_fraction * len(x)))
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        return (xt[:n_train], yt[:n_train]), (xt[n_train:], yt[n_train:])

    def client_train(self, cid: int) -> Batch:
        """The training part of client ``cid``."""
        return self._client(cid)[0]

    def client_size(self, cid: int) -> int:
        """Number of training examples of client ``cid``."""
        return int(self._client(cid)[0][0].shape[0])

    def test(self) -> Batch:
        """The union of the held-out parts of the first ``eval_clients`` clients."""
        held = [self._client(c)[1] for c in range(self._eval_clients)]
        return torch.cat([h[0] for h in held]), torch.cat([h[1] for h in held])


class SyntheticTask:
    """Multinomial logistic regression (60 -> 10) on Synthetic(alpha, beta)."""

    name = "synthetic"
    default_partitioner = "natural"

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        test_fraction: float = 0.2,
        eval_clients: int | None = None,
    ) -> None:
        if alpha < 0 or beta < 0:
            raise ConfigError(f"synthetic task: alpha and beta must be >= 0, got {alpha}, {beta}")
        if not 0 < test_fraction < 1:
            raise ConfigError(
                f"synthetic task: test_fraction must be in (0, 1), got {test_fraction}"
            )
        self.alpha, self.beta = alpha, beta
        self.test_fraction, self.eval_clients = test_fraction, eval_clients

    def build_model(self) -> nn.Module:
        """Multinomial logistic regression."""
        return nn.Linear(DIM, CLASSES)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy."""
        return functional.cross_entropy(outputs, targets)

    def federate(
        self, num_clients: int, partitioner: str, partition_args: dict[str, Any], seed: int
    ) -> SyntheticFederatedDataset:
        """Clients with their natural (generated) data; only the ``natural`` partitioner fits."""
        if partitioner != "natural" or partition_args:
            raise ConfigError(
                f"synthetic task: partition.kind must be 'natural' with no arguments, "
                f"got {partitioner!r} {partition_args}"
            )
        return SyntheticFederatedDataset(
            num_clients, self.alpha, self.beta, seed, self.test_fraction, self.eval_clients
        )
