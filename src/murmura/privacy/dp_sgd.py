"""Sample-level DP-SGD for torch models (Abadi et al. 2016, "Deep learning with DP").

Per-sample gradients come from ``torch.func`` (``functional_call`` + ``vmap`` + ``grad``) in
one vectorised pass; each is clipped to L2 norm ``C`` over all parameters, the clipped
gradients are summed, ``N(0, (z C)^2)`` noise is added to the sum, and the result is divided
by the (expected) batch size. Account the steps with a Poisson accountant at sample rate
``batch / dataset`` (``murmura.privacy.accountant``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from murmura.errors import ConfigError

log = logging.getLogger(__name__)

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss_fn(outputs, targets)`` returning the mean loss of a batch, as a scalar tensor."""
Grads = dict[str, Tensor]

# float32 rounding can leave a rescaled gradient a few ulps above C: rescale to just under.
_SAFETY = 1.0 - 1e-6


@dataclass(frozen=True, slots=True)
class DPStepStats:
    """What one DP-SGD step saw: mean loss, batch size, share of clipped samples, mean norm."""

    loss: float
    batch_size: int
    clipped_fraction: float
    mean_grad_norm: float


def check_dp_compatible(model: nn.Module) -> None:
    """Refuse models whose layers mix samples (batch norm): per-sample gradients are undefined."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ConfigError(
                f"layer {name!r} is {type(module).__name__}, which mixes samples of a batch, "
                f"so DP-SGD cannot bound one sample's influence; use GroupNorm or LayerNorm"
            )


def per_sample_gradients(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    chunk_size: int | None = None,
) -> tuple[Grads, Tensor]:
    """Gradient of the loss of each sample separately, for every trainable parameter.

    Returns ``(grads, losses)``: ``grads[name]`` has shape ``(B, *param.shape)`` and
    ``losses`` shape ``(B,)``. ``chunk_size`` bounds memory by vectorising in chunks.
    """
    check_dp_compatible(model)
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def sample_loss(p: Grads, b: Grads, x: Tensor, y: Tensor) -> Tensor:
        out = functional_call(model, (p, b), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    per_sample = vmap(
        grad_and_value(sample_loss),
        in_dims=(None, None, 0, 0),
        randomness="different",
        chunk_size=chunk_size,
    )
    grads, losses = per_sample(params, buffers, inputs, targets)
    return grads, losses


def per_sample_norms(grads: Grads) -> Tensor:
    """L2 norm of each sample's gradient over all parameters together, shape ``(B,)``."""
    squares = [g.reshape(g.shape[0], -1).pow(2).sum(dim=1) for g in grads.values()]
    return torch.stack(squares).sum(dim=0).sqrt()


def clip_per_sample(grads: Grads, clip_norm: float) -> tuple[Grads, Tensor]:
    """Scale each sample's gradient to L2 norm at most ``clip_norm``; returns (clipped, norms).

    Samples already within the bound are left unchanged (factor exactly 1).
    """
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm!r}")
    norms = per_sample_norms(grads)
    factors = torch.where(
        norms > clip_norm, clip_norm * _SAFETY / norms.clamp_min(1e-12), torch.ones_like(norms)
    )
    clipped = {n: g * factors.view(-1, *([1] * (g.dim() - 1))) for n, g in grads.items()}
    return clipped, norms


def private_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    clip_norm: float,
    noise_multiplier: float,
    generator: torch.Generator | None = None,
    expected_batch_size: int | None = None,
    chunk_size: int | None = None,
) -> tuple[Grads, DPStepStats]:
    """DP-SGD gradient of a batch: clip per sample, sum, add ``N(0, (z C)^2)``, average.

    With Poisson-sampled batches pass ``expected_batch_size`` (``q N``): dividing by the
    realised size would leak it. An empty batch yields pure noise, as the analysis requires.
    """
    if noise_multiplier < 0 or not clip_norm > 0:
        raise ValueError(
            f"need noise_multiplier >= 0 and clip_norm > 0, got {noise_multiplier}, {clip_norm}"
        )
    batch = int(inputs.shape[0])
    divisor = expected_batch_size if expected_batch_size is not None else batch
    if divisor < 1:
        raise ValueError("expected_batch_size (or the batch) must hold at least one sample")
    if batch:
        grads, losses = per_sample_gradients(model, loss_fn, inputs, targets, chunk_size=chunk_size)
        clipped, norms = clip_per_sample(grads, clip_norm)
        sums = {n: g.sum(dim=0) for n, g in clipped.items()}
        clipped_fraction = float((norms > clip_norm).float().mean())
        stats = DPStepStats(float(losses.mean()), batch, clipped_fraction, float(norms.mean()))
    else:
        params = (p for p in model.named_parameters() if p[1].requires_grad)
        sums = {n: torch.zeros_like(p) for n, p in params}
        stats = DPStepStats(float("nan"), 0, 0.0, 0.0)
    std = noise_multiplier * clip_norm
    return {n: _noised(total, std, generator) / divisor for n, total in sums.items()}, stats


def _noised(total: Tensor, std: float, generator: torch.Generator | None) -> Tensor:
    """Add ``N(0, std^2)`` drawn from ``generator`` (seeded for reproducible runs)."""
    if std == 0:
        return total
    noise = torch.normal(
        0.0, std, size=total.shape, generator=generator, dtype=total.dtype, device=total.device
    )
    return total + noise


def dp_sgd_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    clip_norm: float,
    noise_multiplier: float,
    generator: torch.Generator | None = None,
    expected_batch_size: int | None = None,
    chunk_size: int | None = None,
) -> DPStepStats:
    """One DP-SGD step: set each parameter's ``.grad`` to the private gradient, then step.

    Any optimizer works on top, since it only post-processes the private gradient.
    """
    grads, stats = private_gradient(
        model,
        loss_fn,
        inputs,
        targets,
        clip_norm=clip_norm,
        noise_multiplier=noise_multiplier,
        generator=generator,
        expected_batch_size=expected_batch_size,
        chunk_size=chunk_size,
    )
    for name, param in model.named_parameters():
        if name in grads:
            param.grad = grads[name].detach()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    log.debug(
        "DP-SGD step: batch %d, loss %.4g, %.0f%% clipped",
        stats.batch_size,
        stats.loss,
        100 * stats.clipped_fraction,
    )
    return stats
