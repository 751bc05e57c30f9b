"""Attacks as peers: an ``UpdateAttack`` turned into what a peer sends, for gossip.

One sender for the simulated peers (``[topology] attack``) and for a deployed red-team peer
(``murmura peer CONFIG --id K --attack NAME``). A peer's update is its model measured from a
reference: ``relative_to = "delta"`` (the default) takes the round's change
``u = after - before`` and sends ``before + attack(u)``; ``"model"`` takes the model itself
(``u = after``) and sends ``attack(after)``, so sign flipping sends ``-scale * after``.
Only what is sent changes: the peer's own state stays honest. The attack math is the star's
and the tree's own (``ATTACKS``); only the update attacks in ``PEER_ATTACKS`` apply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np

from murmura.attacks.base import PEER_ATTACKS, AttackContext, UpdateAttack, make_attack
from murmura.errors import ConfigError
from murmura.types import FitRes, Vector

log = logging.getLogger(__name__)

RoundSender = Callable[[int, Vector, Vector], Vector]
"""What a peer sends in a round, given the round and its model before and after training."""

Reference = Literal["delta", "model"]


def sender_of(attack: UpdateAttack, node: str, relative_to: Reference = "delta") -> RoundSender:
    """The sender of peer ``node`` running ``attack`` on its update measured as ``relative_to``."""
    if relative_to not in ("delta", "model"):
        raise ConfigError(f"relative_to = {relative_to!r}; valid: delta, model")

    def send(round_: int, before: Vector, after: Vector) -> Vector:
        ref = before if relative_to == "delta" else np.zeros_like(before)
        update = (after - ref).astype(np.float32)
        bad = attack.corrupt(round_, node, FitRes(update, 1)).update
        return (ref + bad).astype(np.float32)

    return send


def peer_attack(
    kind: str, params: Mapping[str, Any], node: str, neighbours: int, seed: int
) -> RoundSender:
    """The sender of peer ``node`` running attack ``kind`` with ``params``.

    ``params`` may hold ``relative_to``; the rest go to the attack. ``neighbours`` sizes the
    scaling attack's default boost (the peer's neighbourhood plus itself, as a cohort, with a
    server learning rate of 1).
    """
    if kind not in PEER_ATTACKS:
        raise ConfigError(f"attack {kind!r} cannot run on a peer; valid: {', '.join(PEER_ATTACKS)}")
    rest = dict(params)
    relative_to = rest.pop("relative_to", "delta")
    ctx = AttackContext(
        num_clients=neighbours + 1, cohort_size=neighbours + 1, server_lr=1.0, seed=seed
    )
    attack = make_attack(kind, ctx, rest)
    assert isinstance(attack, UpdateAttack)
    return sender_of(attack, node, relative_to)


def logged(sender: RoundSender, node: str, kind: str) -> RoundSender:
    """``sender``, logging each round's attack (a deployed red-team peer says what it does)."""

    def send(round_: int, before: Vector, after: Vector) -> Vector:
        out = sender(round_, before, after)
        log.warning(
            "node=%s round=%d: ATTACKING (%s): sending a model %.3g from the honest one",
            node, round_, kind, float(np.linalg.norm(out - after)),
        )  # fmt: skip
        return out

    return send
