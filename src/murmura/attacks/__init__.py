"""Attacks: wrappers around honest clients, and ``ATTACKS``.

Registered: ``sign_flip``, ``gaussian``, ``scaling``, ``label_flip``, ``alie``, ``ipm``,
``malformed`` (NaN, Inf, wrong length, float64) and ``inflate`` (an inflated example
count). In simulation select with ``[attack] kind``, ``fraction`` and ``args``; a deployed
peer can run the update attacks against its real neighbours with ``murmura peer --attack``
(``peer_sender``, for red-teaming).
"""

from murmura.attacks import label_flip, model_poisoning, omniscient
from murmura.attacks.base import (
    ATTACKS,
    AttackContext,
    UpdateAttack,
    check_attack,
    choose_byzantine,
    wrap_byzantine,
)

__all__ = [
    "ATTACKS",
    "AttackContext",
    "UpdateAttack",
    "check_attack",
    "choose_byzantine",
    "label_flip",
    "model_poisoning",
    "omniscient",
    "wrap_byzantine",
]
