"""Attacks: one ``ATTACKS`` registry of attack objects, used by every topology.

Update attacks: ``sign_flip``, ``gaussian``, ``scaling``, ``malformed`` (NaN, Inf, wrong
length, float64), ``inflate`` (an inflated example count). Omniscient: ``alie``, ``ipm`` and
the aggregator-aware ``min_max``, ``min_sum``, ``fang_trimmed_mean``, ``fang_krum``,
``mimic``, ``alie_opt``, ``ipm_opt``. Data: ``label_flip``; backdoors ``backdoor``,
``model_replacement``, ``constrain_and_scale``, ``dba``. In simulation select with
``[attack] kind``, ``fraction`` and ``args`` (star and tree) or ``[topology] attack`` (P2P);
a deployed peer can run the update attacks against its real neighbours with
``murmura peer --attack`` (``peer_sender``, for red-teaming).
"""

from murmura.attacks import adaptive, backdoor, label_flip, model_poisoning, omniscient
from murmura.attacks.base import (
    ATTACKS,
    PEER_ATTACKS,
    AttackContext,
    DataAttack,
    OmniscientAttack,
    RoundView,
    UpdateAttack,
    check_attack,
    choose_byzantine,
    make_attack,
)
from murmura.attacks.clients import attack_client, wrap_byzantine

__all__ = [
    "ATTACKS",
    "PEER_ATTACKS",
    "AttackContext",
    "DataAttack",
    "OmniscientAttack",
    "RoundView",
    "UpdateAttack",
    "adaptive",
    "attack_client",
    "backdoor",
    "check_attack",
    "choose_byzantine",
    "label_flip",
    "make_attack",
    "model_poisoning",
    "omniscient",
    "wrap_byzantine",
]
