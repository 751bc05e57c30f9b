"""Data poisoning by label flipping: the attacker trains on ``y -> C - 1 - y``.

Tolstoy et al. 2020 ("Data Poisoning Attacks Against Federated Learning Systems").
"""

from __future__ import annotations

import torch

from murmura.attacks.base import ATTACKS, AttackContext
from murmura.client import Client, TorchClient
from murmura.data.federated import Batch, FederatedDataset
from murmura.errors import ConfigError
from murmura.privacy.dp_client import DPSGDClient
from murmura.strategy.scaffold import ScaffoldClient


class FlippedLabels:
    """A view of a ``FederatedDataset`` whose training labels are flipped; test data is not."""

    def __init__(self, data: FederatedDataset, num_classes: int) -> None:
        self.data, self.num_classes = data, num_classes

    @property
    def num_clients(self) -> int:
        """How many clients hold data."""
        return self.data.num_clients

    def client_train(self, cid: int) -> Batch:
        """Client ``cid``'s inputs with labels ``C - 1 - y``."""
        x, y = self.data.client_train(cid)
        return x, (self.num_classes - 1) - y

    def client_size(self, cid: int) -> int:
        """Number of training examples client ``cid`` holds."""
        return self.data.client_size(cid)

    def test(self) -> Batch:
        """The central test set, unchanged."""
        return self.data.test()


def label_flipping_client(inner: TorchClient, num_classes: int | None = None) -> TorchClient:
    """A ``TorchClient`` like ``inner`` that trains on flipped labels (same id, model, seed)."""
    if num_classes is None:
        num_classes = int(torch.max(inner.data.test()[1])) + 1
    if num_classes < 2:
        raise ConfigError(f"label_flip: num_classes = {num_classes} must be >= 2")
    data = FlippedLabels(inner.data, num_classes)
    return TorchClient(inner.cid, data, inner.task, inner.model, inner.hp, seed=inner.seed)


@ATTACKS.register("label_flip")
def _label_flip(inner: Client, ctx: AttackContext, num_classes: int | None = None) -> Client:
    if isinstance(inner, ScaffoldClient):  # keep SCAFFOLD's control variate around it
        return ScaffoldClient(label_flipping_client(inner.inner, num_classes))
    if isinstance(inner, DPSGDClient) and isinstance(inner.inner, TorchClient):
        # [privacy] dp_sgd: the attacker still trains with DP-SGD, on its flipped labels
        return DPSGDClient(label_flipping_client(inner.inner, num_classes), inner.dp)
    if not isinstance(inner, TorchClient):
        raise ConfigError(f"label_flip poisons a TorchClient's data, got {type(inner).__name__}")
    return label_flipping_client(inner, num_classes)
