"""Omniscient attacks that craft their update from the round's honest updates.

They use the simulator's omniscient-attacker hook (``murmura.sim.runtime.OmniscientClient``):
the runtime collects and validates the honest results first, then calls ``craft``.
Every attacker of a round sends the same crafted vector, as in both papers.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from murmura.attacks.base import ATTACKS, AttackContext, UpdateAttack
from murmura.client import Client
from murmura.errors import ConfigError
from murmura.sim.runtime import HonestView
from murmura.types import FitRes, Vector


def alie_z_max(n: int, f: int) -> float:
    """Baruch et al. 2019's ``z_max``: ``s = floor(n/2 + 1) - f``, ``z = Phi^-1((n - s) / n)``."""
    if not 0 <= f < n:
        raise ConfigError(f"alie: need 0 <= f < n, got n = {n}, f = {f}")
    s = math.floor(n / 2 + 1) - f
    p = min(max((n - s) / n, 1e-12), 1 - 1e-12)
    return NormalDist().inv_cdf(p)


def alie_update(honest: np.ndarray, z: float) -> Vector:
    """``mean - z * std`` of the honest updates, coordinate-wise (population std)."""
    mu = honest.mean(axis=0, dtype=np.float64)
    sigma = honest.std(axis=0, dtype=np.float64)
    out: Vector = (mu - z * sigma).astype(np.float32)
    return out


def ipm_update(honest: np.ndarray, epsilon: float) -> Vector:
    """``-epsilon * mean`` of the honest updates (Xie et al. 2019)."""
    out: Vector = (-epsilon * honest.mean(axis=0, dtype=np.float64)).astype(np.float32)
    return out


class _Omniscient(UpdateAttack):
    """Trains honestly (its own result is its fallback) and crafts in ``craft``."""

    def craft(self, view: HonestView, own: FitRes) -> FitRes:
        """The crafted update; with no honest update to look at, the honest result."""
        if not view.updates:
            return own
        honest = np.stack(view.updates)
        return FitRes(self.forge(honest, view), own.num_examples, own.metrics)

    def forge(self, honest: np.ndarray, view: HonestView) -> Vector:
        """The malicious vector (subclasses)."""
        raise NotImplementedError


class LittleIsEnough(_Omniscient):
    """ALIE, "A Little Is Enough" (Baruch et al. 2019): ``mean - z_max * std``."""

    def __init__(self, inner: Client, z: float | None = None) -> None:
        super().__init__(inner)
        self.z = z

    def forge(self, honest: np.ndarray, view: HonestView) -> Vector:
        """``mean - z * std`` with ``n`` the round's participants, ``f`` its attackers."""
        n = len(view.updates) + view.num_byzantine
        z = alie_z_max(n, view.num_byzantine) if self.z is None else self.z
        return alie_update(honest, z)


class InnerProductManipulation(_Omniscient):
    """Inner Product Manipulation (Xie et al. 2019, "Fall of Empires"): ``-epsilon * mean``."""

    def __init__(self, inner: Client, epsilon: float = 0.1) -> None:
        super().__init__(inner)
        if not epsilon > 0:
            raise ConfigError(f"ipm: epsilon = {epsilon} must be > 0")
        self.epsilon = epsilon

    def forge(self, honest: np.ndarray, view: HonestView) -> Vector:
        """``-epsilon`` times the honest mean."""
        return ipm_update(honest, self.epsilon)


@ATTACKS.register("alie")
def _alie(inner: Client, ctx: AttackContext, z: float | None = None) -> Client:
    return LittleIsEnough(inner, z)


@ATTACKS.register("ipm")
def _ipm(inner: Client, ctx: AttackContext, epsilon: float = 0.1) -> Client:
    return InnerProductManipulation(inner, epsilon)
