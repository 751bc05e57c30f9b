"""The Client extension point and ``TorchClient``: local SGD epochs on a node's own data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from murmura.aggregate.steps import LOCAL_STEPS
from murmura.data.federated import FederatedDataset
from murmura.data.holdout import HeldOutData
from murmura.learner import Learner
from murmura.seeding import client_generator
from murmura.tasks.base import Task, evaluate_classifier
from murmura.types import EvaluateRes, FitIns, FitRes, Layout, Vector

Client = Learner
"""The star's and the tree's name for a ``murmura.learner.Learner``."""


class FlatModel:
    """A module whose parameters and gradients are views into two flat float32 buffers.

    Loading global weights, reading a delta and an SGD step are then one vector op each,
    whatever the number of tensors.
    """

    def __init__(self, module: nn.Module) -> None:
        params = dict(module.named_parameters())
        self.module = module
        self.layout = Layout.of(params)
        self.flat = torch.empty(self.layout.size, dtype=torch.float32)
        self.grad = torch.zeros(self.layout.size, dtype=torch.float32)
        for p, off, n in zip(params.values(), self.layout.offsets, self.layout.sizes, strict=True):
            self.flat[off : off + n] = p.detach().reshape(-1)
            p.data = self.flat[off : off + n].view(p.shape)
            p.grad = self.grad[off : off + n].view(p.shape)

    def get(self) -> Vector:
        """A copy of the current weights as a numpy vector."""
        return self.flat.numpy().copy()

    def set(self, weights: Vector) -> None:
        """Load weights from a flat vector."""
        self.flat.copy_(torch.from_numpy(np.asarray(weights, dtype=np.float32)))


@dataclass(frozen=True, slots=True)
class LocalSGD:
    """Local training hyper-parameters; ``proximal_mu > 0`` adds FedProx's term (Li et al. 2020)."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    proximal_mu: float = 0.0


def train_local_sgd(
    model: FlatModel,
    task: Task,
    x: torch.Tensor,
    y: torch.Tensor,
    hp: LocalSGD,
    generator: torch.Generator,
) -> float:
    """Run ``hp.epochs`` of minibatch SGD in place on ``model``; return the mean batch loss.

    Samples are reshuffled every epoch with ``generator``; the last batch may be smaller.
    """
    start = model.flat.clone() if hp.proximal_mu > 0 else None
    buf = torch.zeros_like(model.flat) if hp.momentum > 0 else None
    n, loss_sum, steps = len(x), 0.0, 0
    for _ in range(hp.epochs):
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, hp.batch_size):
            idx = perm[i : i + hp.batch_size]
            model.grad.zero_()
            loss = task.loss(model.module(x[idx]), y[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            with torch.no_grad():
                sgd_step(model, hp, start, buf)
            loss_sum += loss.item()
            steps += 1
    return loss_sum / max(steps, 1)


def sgd_steps(n: int, hp: LocalSGD) -> int:
    """The minibatch steps ``train_local_sgd`` takes on ``n`` examples: FedNova's ``tau_i``."""
    return hp.epochs * -(-n // hp.batch_size)


def sgd_step(
    model: FlatModel, hp: LocalSGD, start: torch.Tensor | None, buf: torch.Tensor | None
) -> None:
    """One SGD step on the flat buffers, in the order torch.optim.SGD applies its terms."""
    grad = model.grad
    if hp.weight_decay:
        grad.add_(model.flat, alpha=hp.weight_decay)
    if start is not None:
        grad.add_(model.flat - start, alpha=hp.proximal_mu)
    if buf is not None:
        buf.mul_(hp.momentum).add_(grad)
        grad = buf
    model.flat.add_(grad, alpha=-hp.lr)


class TorchClient:
    """A simulated node: one client of a ``FederatedDataset``, trained with local SGD.

    Clients of one process share a ``FlatModel`` (they run one at a time), so a client costs
    only its id and hyper-parameters until it is asked to train.
    """

    def __init__(
        self,
        cid: int,
        data: FederatedDataset,
        task: Task,
        model: FlatModel,
        hp: LocalSGD,
        seed: int = 0,
    ) -> None:
        self.cid = cid
        self.node_id = f"client-{cid}"
        self.data, self.task, self.model, self.hp, self.seed = data, task, model, hp, seed

    @property
    def num_examples(self) -> int:
        """Training examples this client holds (without loading them)."""
        return self.data.client_size(self.cid)

    @property
    def local_steps(self) -> int | None:
        """None: a client trains ``hp.epochs`` full passes over its data."""
        return None

    def local_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training inputs and labels of this client."""
        return self.data.client_train(self.cid)

    def generator(self, round_: int) -> torch.Generator:
        """The random stream of this client in ``round_``."""
        return client_generator(self.seed, round_, self.cid)

    def fit(self, ins: FitIns) -> FitRes:
        """Local SGD from the global weights; returns the delta and the mean training loss."""
        x, y = self.local_data()
        global_w = torch.from_numpy(np.asarray(ins.weights, dtype=np.float32))
        self.model.flat.copy_(global_w)
        hp = with_overrides(self.hp, ins.config)
        loss = train_local_sgd(self.model, self.task, x, y, hp, self.generator(ins.round))
        delta = (self.model.flat - global_w).numpy()
        metrics = {"train_loss": loss, LOCAL_STEPS: float(sgd_steps(len(x), hp))}
        return FitRes(update=delta, num_examples=len(x), metrics=metrics)

    def evaluate(self, weights: Vector) -> EvaluateRes:
        """Loss and accuracy of ``weights`` on this client's held-out data, never its training data.

        Without held-out data (``murmura.data.holdout``) it evaluates on nothing: 0 examples.
        """
        if not isinstance(self.data, HeldOutData):
            return EvaluateRes(loss=0.0, num_examples=0)
        x, y = self.data.client_eval(self.cid)
        if len(x) == 0:
            return EvaluateRes(loss=0.0, num_examples=0)
        self.model.set(weights)
        return evaluate_classifier(self.model.module, self.task, x, y)


def with_overrides(hp: LocalSGD, config: object) -> LocalSGD:
    """Hyper-parameters with any the server sent in ``FitIns.config`` taking precedence."""
    if not isinstance(config, dict) or not config:
        return hp
    known = {k: v for k, v in config.items() if k in LocalSGD.__dataclass_fields__}
    return LocalSGD(**{**{f: getattr(hp, f) for f in LocalSGD.__dataclass_fields__}, **known})
