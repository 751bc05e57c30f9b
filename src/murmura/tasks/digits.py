"""The ``digits`` task: scikit-learn's 8x8 digits with an MLP 64-64-10 (workload W1)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional

from murmura.data.federated import ArrayFederatedDataset
from murmura.data.partition import partition

Arrays = tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]


def load_digits_split(test_size: float = 0.2, seed: int = 0) -> Arrays:
    """Stratified train/test split of digits, standardised with the train split's statistics."""
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=seed
    )
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    std[std == 0] = 1.0
    return (
        ((x_tr - mean) / std).astype(np.float32),
        y_tr.astype(np.int64),
        ((x_te - mean) / std).astype(np.float32),
        y_te.astype(np.int64),
    )


class DigitsTask:
    """Handwritten digits, 64 features, 10 classes; ships with scikit-learn (no download)."""

    name = "digits"

    def __init__(self, hidden: int = 64, split_seed: int = 0) -> None:
        self.hidden = hidden
        self.split_seed = split_seed

    def build_model(self) -> nn.Module:
        """MLP 64 -> hidden -> 10 with ReLU."""
        return nn.Sequential(nn.Linear(64, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 10))

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy."""
        return functional.cross_entropy(outputs, targets)

    def federate(
        self, num_clients: int, partitioner: str, partition_args: dict[str, Any], seed: int
    ) -> ArrayFederatedDataset:
        """The train split partitioned across clients; the test split stays central."""
        x_tr, y_tr, x_te, y_te = load_digits_split(seed=self.split_seed)
        parts = partition(partitioner, y_tr, num_clients, seed, **partition_args)
        return ArrayFederatedDataset(x_tr, y_tr, parts, x_te, y_te)
