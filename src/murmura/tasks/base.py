"""The Task extension point: what is learned (data, model, loss, metrics)."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from murmura.data.federated import FederatedDataset
from murmura.types import EvaluateRes


class Task(Protocol):
    """A learning problem: a model builder, a loss, and data split across clients."""

    name: str

    def build_model(self) -> nn.Module:
        """A freshly initialised model (the caller seeds torch first)."""
        ...

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss over a batch."""
        ...

    def federate(
        self, num_clients: int, partitioner: str, partition_args: dict[str, Any], seed: int
    ) -> FederatedDataset:
        """The task's data split across ``num_clients`` clients."""
        ...


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module, task: Task, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096
) -> EvaluateRes:
    """Mean loss and accuracy of a classifier on ``(x, y)`` (only the loss for regression)."""
    regression = bool(getattr(task, "regression", False))
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        out = model(xb)
        loss_sum += float(task.loss(out, yb)) * len(xb)
        if not regression:
            correct += int((out.argmax(dim=1) == yb).sum())
    model.train()
    n = len(x)
    if regression:
        return EvaluateRes(loss=loss_sum / max(n, 1), num_examples=n)
    return EvaluateRes(
        loss=loss_sum / max(n, 1), num_examples=n, metrics={"accuracy": correct / max(n, 1)}
    )
