"""Attack plumbing: the ``ATTACKS`` registry, Byzantine client selection and wrappers.

Attacks wrap honest clients; strategies never special-case them. A
factory in ``ATTACKS`` takes ``(inner, ctx, **params)`` and returns a ``Client``.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from murmura.client import Client
from murmura.errors import ConfigError
from murmura.registry import Registry
from murmura.seeding import derive_seed
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

log = logging.getLogger(__name__)
_SELECTION_STREAM = 0xB12A  # keeps the Byzantine choice apart from every other seeded stream


@dataclass(frozen=True, slots=True)
class AttackContext:
    """What an attack may know about the run it sits in."""

    num_clients: int
    cohort_size: int
    server_lr: float
    seed: int


AttackFactory = Callable[..., Client]
ATTACKS: Registry[AttackFactory] = Registry("attack")


class UpdateAttack:
    """A wrapper that trains honestly, then replaces the update with ``corrupt(...)``."""

    def __init__(self, inner: Client) -> None:
        self.inner = inner
        self.node_id = inner.node_id

    def fit(self, ins: FitIns) -> FitRes:
        """The inner client's result with a corrupted update."""
        res = self.inner.fit(ins)
        return FitRes(self.corrupt(ins, res.update), res.num_examples, res.metrics)

    def corrupt(self, ins: FitIns, update: Vector) -> Vector:
        """The malicious update (identity here; subclasses override)."""
        return update

    def evaluate(self, weights: Vector) -> EvaluateRes:
        """Evaluation is left honest."""
        return self.inner.evaluate(weights)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.node_id!r})"


def choose_byzantine(num_clients: int, fraction: float, seed: int) -> list[int]:
    """``round(fraction * num_clients)`` client indices, fixed by ``seed``, sorted."""
    if not 0 <= fraction <= 1:
        raise ConfigError(f"attack.fraction = {fraction} must be in [0, 1]")
    k = math.floor(fraction * num_clients + 0.5)
    rng = np.random.default_rng(derive_seed(seed, _SELECTION_STREAM))
    return sorted(int(i) for i in rng.choice(num_clients, size=k, replace=False))


def check_attack(kind: str, params: Mapping[str, Any]) -> None:
    """Raise if ``kind`` is unknown or does not take ``params`` (before any training)."""
    factory = ATTACKS.get(kind)
    try:
        inspect.signature(factory).bind(None, None, **params)
    except TypeError as exc:
        raise ConfigError(f"attack {kind!r}: {exc}") from None


def wrap_byzantine(
    clients: Sequence[Client],
    kind: str,
    fraction: float,
    params: Mapping[str, Any],
    ctx: AttackContext,
) -> tuple[list[Client], list[str]]:
    """``clients`` with a seeded ``fraction`` wrapped by attack ``kind``; and their node ids."""
    check_attack(kind, params)
    chosen = set(choose_byzantine(len(clients), fraction, ctx.seed))
    factory = ATTACKS.get(kind)
    out = [factory(c, ctx, **params) if i in chosen else c for i, c in enumerate(clients)]
    byzantine = [c.node_id for i, c in enumerate(clients) if i in chosen]
    log.info("attack %s: %d of %d clients are Byzantine", kind, len(byzantine), len(clients))
    return out, byzantine
