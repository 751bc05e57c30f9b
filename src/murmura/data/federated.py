"""Federated datasets: a central test set and per-client training data, produced lazily."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray

Batch = tuple[torch.Tensor, torch.Tensor]


class FederatedDataset(Protocol):
    """Per-client training data and a central test set; clients are numbered 0..n-1."""

    @property
    def num_clients(self) -> int:
        """How many clients hold data."""
        ...

    def client_train(self, cid: int) -> Batch:
        """Inputs and targets of client ``cid``, materialised on demand."""
        ...

    def client_size(self, cid: int) -> int:
        """Number of training examples client ``cid`` holds."""
        ...

    def test(self) -> Batch:
        """The central test set."""
        ...


def _targets(y: NDArray[Any]) -> NDArray[Any]:
    """Class indices as int64; real values (regression) as float32."""
    kind = np.asarray(y).dtype.kind
    return np.ascontiguousarray(y, dtype=np.float32 if kind == "f" else np.int64)


class ArrayFederatedDataset:
    """Clients as index lists into one shared training array; nothing is copied up front."""

    def __init__(
        self,
        x_train: NDArray[np.float32],
        y_train: NDArray[Any],
        parts: Sequence[NDArray[np.int64]],
        x_test: NDArray[np.float32],
        y_test: NDArray[Any],
    ) -> None:
        self._x = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))
        self._y = torch.from_numpy(_targets(y_train))
        self._parts = [torch.from_numpy(np.asarray(p, dtype=np.int64)) for p in parts]
        self._test = (
            torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)),
            torch.from_numpy(_targets(y_test)),
        )

    @property
    def num_clients(self) -> int:
        """How many clients hold data."""
        return len(self._parts)

    def client_train(self, cid: int) -> Batch:
        """Inputs and targets of client ``cid`` (a gather from the shared array)."""
        idx = self._parts[cid]
        return self._x[idx], self._y[idx]

    def client_size(self, cid: int) -> int:
        """Number of training examples client ``cid`` holds."""
        return int(self._parts[cid].shape[0])

    def test(self) -> Batch:
        """The central test set."""
        return self._test
