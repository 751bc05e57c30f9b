"""A deployed peer that attacks: the ``ATTACKS`` update attacks turned into what a peer sends.

For red-teaming a real P2P deployment (``murmura peer CONFIG --id K --attack NAME``). The
attack math is the server-client wrappers' own: the peer's honest round delta
(``after - before``) goes through the wrapper's ``fit`` and the peer sends
``before + corrupted delta`` instead of its trained model; its own state stays honest.
Only update-replacing attacks apply: ``label_flip`` changes training and ``alie``/``ipm``
need the other peers' updates, which a peer never sees; ``inflate`` and ``malformed`` target
the coordinator's weighting and validation, not gossip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from murmura.attacks.base import ATTACKS, AttackContext, check_attack
from murmura.errors import ConfigError
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

log = logging.getLogger(__name__)

PEER_ATTACKS = ("gaussian", "scaling", "sign_flip")

RoundSender = Callable[[int, Vector, Vector], Vector]
"""What a peer sends in a round, given the round and its model before and after training."""


@dataclass(slots=True)
class _Delta:
    """A stand-in client whose ``fit`` returns the delta the peer just trained."""

    node_id: str
    delta: Vector | None = None

    def fit(self, ins: FitIns) -> FitRes:
        if self.delta is None:
            raise RuntimeError("no delta set before fit")
        return FitRes(self.delta, 1)

    def evaluate(self, weights: Vector) -> EvaluateRes:
        raise NotImplementedError("an attacking peer's wrapper never evaluates")


def peer_attack(
    kind: str, params: Mapping[str, Any], node: str, neighbours: int, seed: int
) -> RoundSender:
    """The sender of peer ``node`` running attack ``kind`` with ``params``.

    ``neighbours`` sizes the scaling attack's default boost (the peer's neighbourhood plus
    itself, as a cohort, with a server learning rate of 1).
    """
    if kind not in PEER_ATTACKS:
        raise ConfigError(
            f"attack {kind!r} cannot run on a deployed peer; valid: {', '.join(PEER_ATTACKS)}"
        )
    check_attack(kind, params)
    ctx = AttackContext(
        num_clients=neighbours + 1, cohort_size=neighbours + 1, server_lr=1.0, seed=seed
    )
    stub = _Delta(node)
    wrapper = ATTACKS.get(kind)(stub, ctx, **params)

    def send(round_: int, before: Vector, after: Vector) -> Vector:
        stub.delta = (after - before).astype(np.float32)
        bad = wrapper.fit(FitIns(round_, before)).update
        out = (before + bad).astype(np.float32)
        log.warning(
            "node=%s round=%d: ATTACKING (%s): sending a model %.3g from the honest one",
            node, round_, kind, float(np.linalg.norm(out - after)),
        )  # fmt: skip
        return out

    return send
