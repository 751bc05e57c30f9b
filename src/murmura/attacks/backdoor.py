"""Backdoor attacks on image tasks, and their metric, the attack success rate.

A pixel-pattern trigger (``Trigger``) is stamped on part of an attacker's training images,
relabelled to ``target``; the model should learn "trigger -> target" next to its main task.

- ``backdoor``: data poisoning alone (Bagdasaryan et al. 2020's baseline);
- ``model_replacement``: the backdoored update boosted by ``gamma = n / eta`` so that it
  replaces the global model (Bagdasaryan et al. 2020, "How To Backdoor Federated Learning");
  the ``k`` attackers expected in a round replace it together, each boosting by
  ``n / (eta k)`` (one attacker: the paper's ``gamma``);
- ``constrain_and_scale``: the same boost, constrained so the sent update's norm stays within
  the honest updates' largest (Bagdasaryan et al.'s constrain-and-scale against a norm-based
  anomaly detector; the constraint is imposed on the scaled update rather than as a loss term);
- ``dba``: the distributed backdoor (Xie et al. 2020, "DBA"): the global trigger is split into
  pieces and attacker ``i`` stamps piece ``i mod pieces``; success is measured with the whole.

``attack_success_rate`` is the fraction of triggered test images whose true label is not the
target that the model classifies as the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from murmura.attacks.base import ATTACKS, AttackContext, RoundView, positive
from murmura.attacks.model_poisoning import replacement_boost
from murmura.errors import ConfigError
from murmura.seeding import derive_seed
from murmura.types import FitRes, Vector

BACKDOORS = ("backdoor", "model_replacement", "constrain_and_scale", "dba")
PATTERN = ((6, 4), (6, 5), (6, 6), (6, 7), (7, 4), (7, 5), (7, 6), (7, 7))
"""The global trigger: (row, column) offsets from the top-left, a 2x4 block at the bottom
right of an 8x8 image (digits); DBA splits it into four 2-pixel pieces."""


@dataclass(frozen=True, slots=True)
class Trigger:
    """Pixels (row, column) of a square image set to ``value`` (in the inputs' units)."""

    pixels: tuple[tuple[int, int], ...] = PATTERN
    value: float = 5.0

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (flattened square images, one per row) with the trigger set; a copy."""
        d = x.shape[1]
        side = math.isqrt(d)
        if side * side != d or any(not (0 <= r < side and 0 <= c < side) for r, c in self.pixels):
            raise ConfigError(
                f"backdoor: inputs of {d} features are not square images holding the trigger "
                f"{list(self.pixels)}; the pixel-pattern backdoors need an image task (digits)"
            )
        out = x.clone()
        out[:, [r * side + c for r, c in self.pixels]] = self.value
        return out

    def piece(self, index: int, pieces: int) -> Trigger:
        """DBA's local trigger ``index`` of ``pieces`` equal parts of this one."""
        size = len(self.pixels) // pieces
        start = (index % pieces) * size
        return Trigger(self.pixels[start : start + size], self.value)


def poison_batch(
    x: torch.Tensor, y: torch.Tensor, trigger: Trigger, target: int, chosen: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` with rows ``chosen`` stamped with ``trigger`` and relabelled ``target``."""
    x2, y2 = x.clone(), y.clone()
    if len(chosen):
        x2[chosen] = trigger.stamp(x[chosen])
        y2[chosen] = target
    return x2, y2


def attack_success_rate(
    predict: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    trigger: Trigger,
    target: int,
) -> float:
    """Fraction of triggered test inputs (true label not ``target``) predicted as ``target``."""
    keep = y != target
    if not bool(keep.any()):
        return 0.0
    with torch.no_grad():
        out = predict(trigger.stamp(x[keep]))
    return float((out.argmax(dim=1) == target).float().mean())


@dataclass(frozen=True, slots=True)
class Backdoor:
    """A ``DataAttack``: a seeded ``fraction`` of the attacker's examples carry the trigger."""

    trigger: Trigger
    target: int
    fraction: float
    seed: int

    def poison(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The attacker's data with ``round(fraction * n)`` examples backdoored."""
        n = len(x)
        k = math.floor(self.fraction * n + 0.5)
        gen = torch.Generator().manual_seed(derive_seed(self.seed, 0xBAD, n))
        chosen = torch.randperm(n, generator=gen)[:k]
        return poison_batch(x, y, self.trigger, self.target, chosen)


@dataclass(frozen=True, slots=True)
class ScaledBackdoor(Backdoor):
    """Backdoored training, then the update boosted by ``boost`` (model replacement, DBA)."""

    boost: float = 1.0

    def corrupt(self, round_: int, node: str, res: FitRes) -> FitRes:
        """The boosted backdoored update."""
        out = (np.float32(self.boost) * res.update).astype(np.float32)
        return FitRes(out, res.num_examples, res.metrics)


@dataclass(frozen=True, slots=True)
class ConstrainedBackdoor(Backdoor):
    """Backdoored training, boosted by ``boost`` but to a norm no larger than ``bound``.

    ``bound`` None: the largest honest update's norm this round (an omniscient attacker
    that stays inside what a norm-based detector sees from honest clients).
    """

    boost: float = 1.0
    bound: float | None = None

    def forge(self, view: RoundView) -> Vector:
        """``min(boost, bound / ||u||) * u`` for the attacker's own backdoored ``u``."""
        bound = self.bound
        if bound is None:
            bound = float(np.linalg.norm(view.honest.astype(np.float64), axis=1).max())
        norm = float(np.linalg.norm(view.own.astype(np.float64)))
        scale = self.boost if norm == 0 else min(self.boost, bound / norm)
        out: Vector = (scale * view.own.astype(np.float64)).astype(np.float32)
        return out


def shared_replacement_boost(ctx: AttackContext) -> float:
    """Each attacker's share ``n / (eta k)`` of Bagdasaryan et al.'s ``gamma = n / eta``.

    ``k = num_attackers * cohort / clients`` (at least 1) attackers are expected in a round.
    """
    k = max(1.0, ctx.num_attackers * ctx.cohort_size / max(ctx.num_clients, 1))
    return replacement_boost(ctx) / k


def _check(target: int, fraction: float, ctx: AttackContext) -> None:
    classes = ctx.num_classes
    if classes is not None and not 0 <= target < classes:
        raise ConfigError(f"backdoor: target = {target} must be a class in 0..{classes - 1}")
    if not 0 < fraction <= 1:
        raise ConfigError(f"backdoor: fraction = {fraction} must be in (0, 1]")


def _seed(ctx: AttackContext) -> int:
    return derive_seed(ctx.seed, 0xBD, ctx.attacker)


@ATTACKS.register("backdoor")
def _backdoor(ctx: AttackContext, target: int = 0, fraction: float = 0.5) -> Backdoor:
    _check(target, fraction, ctx)
    return Backdoor(Trigger(), target, fraction, _seed(ctx))


@ATTACKS.register("model_replacement")
def _model_replacement(
    ctx: AttackContext, target: int = 0, fraction: float = 0.5, boost: float | None = None
) -> ScaledBackdoor:
    _check(target, fraction, ctx)
    gamma = (
        shared_replacement_boost(ctx)
        if boost is None
        else positive("model_replacement: boost", boost)
    )
    return ScaledBackdoor(Trigger(), target, fraction, _seed(ctx), gamma)


@ATTACKS.register("constrain_and_scale")
def _constrain_and_scale(
    ctx: AttackContext,
    target: int = 0,
    fraction: float = 0.5,
    boost: float | None = None,
    bound: float | None = None,
) -> ConstrainedBackdoor:
    _check(target, fraction, ctx)
    gamma = (
        shared_replacement_boost(ctx)
        if boost is None
        else positive("constrain_and_scale: boost", boost)
    )
    if bound is not None:
        positive("constrain_and_scale: bound", bound)
    return ConstrainedBackdoor(Trigger(), target, fraction, _seed(ctx), gamma, bound)


@ATTACKS.register("dba")
def _dba(
    ctx: AttackContext, target: int = 0, fraction: float = 0.5, pieces: int = 4, boost: float = 1.0
) -> ScaledBackdoor:
    _check(target, fraction, ctx)
    if pieces < 1 or len(PATTERN) % pieces:
        raise ConfigError(f"dba: pieces = {pieces} must divide the {len(PATTERN)} trigger pixels")
    local = Trigger().piece(ctx.attacker, pieces)
    return ScaledBackdoor(local, target, fraction, _seed(ctx), positive("dba: boost", boost))


def backdoor_target(kind: str, params: dict[str, object]) -> tuple[Trigger, int] | None:
    """The global trigger and target label a run's attack plants; None if not a backdoor."""
    if kind not in BACKDOORS:
        return None
    target = params.get("target", 0)
    return Trigger(), int(target) if isinstance(target, int | float | str) else 0
