"""Data poisoning by label flipping: the attacker trains on ``y -> C - 1 - y``.

Tolstoy et al. 2020 ("Data Poisoning Attacks Against Federated Learning Systems").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from murmura.attacks.base import ATTACKS, AttackContext
from murmura.errors import ConfigError


@dataclass(frozen=True, slots=True)
class LabelFlip:
    """A ``DataAttack``: labels ``C - 1 - y`` for ``C`` classes; inputs unchanged."""

    num_classes: int

    def poison(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs with flipped labels."""
        return x, (self.num_classes - 1) - y


@ATTACKS.register("label_flip")
def _label_flip(ctx: AttackContext, num_classes: int | None = None) -> LabelFlip:
    c = ctx.num_classes if num_classes is None else num_classes
    if c is None or c < 2:
        raise ConfigError(f"label_flip: num_classes = {c} must be >= 2")
    return LabelFlip(c)
