"""Sample-level DP-SGD inside any local learner (Abadi et al. 2016).

``DPSGDClient`` wraps a ``LocalLearner`` (a star client, a tree leaf, a simulated or deployed
peer) and replaces its plain SGD with ``train_dp_sgd``, keeping its data, hyper-parameters,
random stream and step count: every step
draws a Poisson batch (each sample with probability ``q = B / n``), computes per-sample
gradients with ``torch.func``, clips each to ``C``, adds ``N(0, (z C)^2)`` to the sum and
divides by the expected batch ``q n`` (``murmura.privacy.dp_sgd.private_gradient``); the
client's SGD rule (momentum, weight decay, FedProx's term) then post-processes that gradient.
An epoch is ``round(n / B)`` steps, so one round is ``epochs * round(n / B)`` sampled
Gaussian steps at rate ``q`` (a D-PSGD peer's ``local_steps`` instead): ``dp_sgd_schedule``
gives those numbers to the accountant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

# The learner's own SGD rule and config overrides: DP-SGD changes only the gradient.
from murmura.client import FlatModel, LocalSGD, sgd_step, with_overrides
from murmura.learner import LocalLearner
from murmura.privacy.dp_sgd import check_dp_compatible, private_gradient
from murmura.tasks.base import Task
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DPSGDParams:
    """Per-sample clip norm ``C`` and noise multiplier ``z`` of DP-SGD."""

    clip_norm: float
    noise_multiplier: float

    def __post_init__(self) -> None:
        if not self.clip_norm > 0 or not self.noise_multiplier >= 0:
            raise ValueError(
                f"DP-SGD needs clip_norm > 0 and noise_multiplier >= 0, got "
                f"{self.clip_norm!r}, {self.noise_multiplier!r}"
            )


def dp_sgd_schedule(
    num_examples: int, batch_size: int, epochs: int, steps: int | None = None
) -> tuple[float, int]:
    """(sample rate, steps per round) of Poisson-batched DP-SGD on ``num_examples`` samples.

    ``steps`` fixes the steps per round (a D-PSGD peer's ``local_steps``); else
    ``epochs * round(n / B)``.
    """
    if num_examples < 1 or batch_size < 1 or epochs < 1:
        raise ValueError("num_examples, batch_size and epochs must be >= 1")
    rate = min(1.0, batch_size / num_examples)
    if steps is None:
        steps = epochs * max(1, round(num_examples / batch_size))
    return rate, steps


def train_dp_sgd(
    model: FlatModel,
    task: Task,
    x: torch.Tensor,
    y: torch.Tensor,
    hp: LocalSGD,
    dp: DPSGDParams,
    generator: torch.Generator,
    steps: int | None = None,
) -> tuple[float, float]:
    """DP-SGD in place on ``model``; returns (mean batch loss, mean share of clipped samples).

    ``steps`` overrides the schedule's ``epochs * round(n / B)`` (a D-PSGD peer's few steps).
    """
    n = len(x)
    rate, planned = dp_sgd_schedule(n, hp.batch_size, hp.epochs)
    steps = planned if steps is None else steps
    expected = min(hp.batch_size, n)  # q * n, an integer by construction of q
    start = model.flat.clone() if hp.proximal_mu > 0 else None
    buf = torch.zeros_like(model.flat) if hp.momentum > 0 else None
    losses, clipped = [], []
    for _ in range(steps):
        idx = (torch.rand(n, generator=generator) < rate).nonzero().squeeze(1)
        grads, stats = private_gradient(
            model.module,
            task.loss,
            x[idx],
            y[idx],
            clip_norm=dp.clip_norm,
            noise_multiplier=dp.noise_multiplier,
            generator=generator,
            expected_batch_size=expected,
        )
        with torch.no_grad():
            model.grad.copy_(torch.cat([grads[name].reshape(-1) for name in model.layout.names]))
            sgd_step(model, hp, start, buf)
        if stats.batch_size:
            losses.append(stats.loss)
            clipped.append(stats.clipped_fraction)
    mean = float(np.mean(losses)) if losses else float("nan")
    return mean, float(np.mean(clipped)) if clipped else 0.0


class DPSGDClient:
    """Wraps a ``LocalLearner`` so that it trains with sample-level DP-SGD instead of SGD."""

    def __init__(self, inner: LocalLearner, dp: DPSGDParams) -> None:
        check_dp_compatible(inner.model.module)
        self.inner, self.node_id, self.dp = inner, inner.node_id, dp

    @classmethod
    def of(cls, learner: LocalLearner, dp: DPSGDParams) -> DPSGDClient:
        """The DP-SGD twin of ``learner``: same data, model, hyper-parameters and streams."""
        return cls(learner, dp)

    def fit(self, ins: FitIns) -> FitRes:
        """DP-SGD from ``ins.weights``; returns the delta and the mean training loss."""
        inner = self.inner
        x, y = inner.local_data()
        start = torch.from_numpy(np.asarray(ins.weights, dtype=np.float32))
        inner.model.flat.copy_(start)
        loss, clipped = train_dp_sgd(
            inner.model,
            inner.task,
            x,
            y,
            with_overrides(inner.hp, ins.config),
            self.dp,
            inner.generator(ins.round),
            inner.local_steps,
        )
        delta = (inner.model.flat - start).numpy()
        metrics = {"train_loss": loss, "dp_sgd_clipped_fraction": clipped}
        return FitRes(update=delta, num_examples=len(x), metrics=metrics)

    def evaluate(self, weights: Vector) -> EvaluateRes:
        """The inner learner's local evaluation."""
        return self.inner.evaluate(weights)
