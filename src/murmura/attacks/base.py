"""Attack plumbing: the one ``ATTACKS`` registry, the attack kinds, Byzantine selection.

An attack is a small object built by ``ATTACKS.get(name)(ctx, **params)``; it never touches a
client, a transport or a round loop. It is one (or two) of three kinds:

- ``UpdateAttack``: replaces an honest result with a malicious one, seeing only that result
  (sign flip, Gaussian noise, scaling, malformed, inflated count);
- ``OmniscientAttack``: forges its update from the round's honest updates (ALIE, IPM, the
  aggregator-aware attacks of ``adaptive``);
- ``DataAttack``: poisons the attacker's training data (label flipping, backdoors).

The topologies turn the same object into what they need: a wrapped client for the star and
the tree (``murmura.attacks.clients``), a sender for simulated and deployed peers
(``murmura.attacks.peer_sender``). So one attack gives one malicious update everywhere.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from murmura.errors import ConfigError
from murmura.registry import Registry
from murmura.seeding import derive_seed
from murmura.types import FitRes, Vector

_SELECTION_STREAM = 0xB12A  # keeps the Byzantine choice apart from every other seeded stream


@dataclass(frozen=True, slots=True)
class AttackContext:
    """What an attack may know about the run it sits in.

    ``aggregator`` and ``aggregator_args``, behind ``pre_aggregation``, are the rule in use
    (aggregator-aware attacks search against it); ``attacker`` is this attacker's index among
    ``num_attackers`` (a distributed backdoor gives each its own piece of the trigger);
    ``num_classes`` is the task's, where known (label flipping, backdoors).
    """

    num_clients: int
    cohort_size: int
    server_lr: float
    seed: int
    aggregator: str = "weighted_mean"
    aggregator_args: Mapping[str, Any] = field(default_factory=dict)
    pre_aggregation: str = "none"
    pre_aggregation_args: Mapping[str, Any] = field(default_factory=dict)
    attacker: int = 0
    num_attackers: int = 1
    num_classes: int | None = None


@dataclass(frozen=True, slots=True)
class RoundView:
    """What an omniscient attacker sees in a round: the honest updates and its own."""

    round: int
    honest: np.ndarray
    """The round's validated honest updates, one row each (at least one row)."""
    own: Vector
    """The update this attacker trained itself (on its own, possibly poisoned, data)."""
    num_byzantine: int
    """Attackers in the round (they all send what ``forge`` returns)."""
    nodes: tuple[str, ...] = ()
    """The node ids of the ``honest`` rows, in order (empty: not known)."""
    weights: np.ndarray | None = None
    """The rule's weights: the honest rows' example counts, then each attacker's claimed
    one (``num_byzantine`` more); None: every row weighs the same."""


@runtime_checkable
class UpdateAttack(Protocol):
    """Replaces one honest result with a malicious one, seeing nothing else."""

    def corrupt(self, round_: int, node: str, res: FitRes) -> FitRes:
        """The result to send instead of ``res`` (node ``node``, round ``round_``)."""
        ...


@runtime_checkable
class OmniscientAttack(Protocol):
    """Forges its update from the round's honest updates (simulation only)."""

    def forge(self, view: RoundView) -> Vector:
        """The malicious update."""
        ...


@runtime_checkable
class DataAttack(Protocol):
    """Poisons the attacker's training data; test data is never touched."""

    def poison(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The poisoned training inputs and labels."""
        ...


AttackFactory = Any  # Callable[[AttackContext, ...], an attack]; params vary per attack
ATTACKS: Registry[AttackFactory] = Registry("attack")

PEER_ATTACKS = ("gaussian", "scaling", "sign_flip")
"""Update attacks a peer can run: the others need honest updates a peer never sees (the
omniscient ones), change training (data attacks), or target a coordinator's weighting and
validation (``inflate``, ``malformed``)."""


def check_attack(kind: str, params: Mapping[str, Any]) -> None:
    """Raise if ``kind`` is unknown or does not take ``params`` (before any training)."""
    factory = ATTACKS.get(kind)
    try:
        inspect.signature(factory).bind(None, **params)
    except TypeError as exc:
        raise ConfigError(f"attack {kind!r}: {exc}") from None


def make_attack(kind: str, ctx: AttackContext, params: Mapping[str, Any]) -> object:
    """The attack ``kind`` built with ``params`` for ``ctx`` (a bad parameter: ConfigError)."""
    check_attack(kind, params)
    return ATTACKS.get(kind)(ctx, **params)


def choose_byzantine(num_clients: int, fraction: float, seed: int) -> list[int]:
    """``round(fraction * num_clients)`` client indices, fixed by ``seed``, sorted."""
    if not 0 <= fraction <= 1:
        raise ConfigError(f"attack.fraction = {fraction} must be in [0, 1]")
    k = math.floor(fraction * num_clients + 0.5)
    rng = np.random.default_rng(derive_seed(seed, _SELECTION_STREAM))
    return sorted(int(i) for i in rng.choice(num_clients, size=k, replace=False))


def positive(name: str, value: float) -> float:
    """``value`` if it is > 0, else a ConfigError naming the attack parameter."""
    if not value > 0:
        raise ConfigError(f"{name} = {value} must be > 0")
    return float(value)
