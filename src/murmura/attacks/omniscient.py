"""Omniscient attacks that craft their update from the round's honest updates.

Both are ``OmniscientAttack``s: the round loops (star and tree) collect and validate the
honest results first, then hand them to ``forge`` (``murmura.attacks.clients``). Every
attacker of a round sends the same crafted vector, as in both papers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from murmura.attacks.base import ATTACKS, AttackContext, RoundView, positive
from murmura.errors import ConfigError
from murmura.types import Vector


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


@dataclass(frozen=True, slots=True)
class LittleIsEnough:
    """ALIE, "A Little Is Enough" (Baruch et al. 2019): ``mean - z_max * std``."""

    z: float | None = None

    def forge(self, view: RoundView) -> Vector:
        """``mean - z * std`` with ``n`` the round's participants, ``f`` its attackers."""
        n = len(view.honest) + view.num_byzantine
        z = alie_z_max(n, view.num_byzantine) if self.z is None else self.z
        return alie_update(view.honest, z)


@dataclass(frozen=True, slots=True)
class InnerProductManipulation:
    """Inner Product Manipulation (Xie et al. 2019, "Fall of Empires"): ``-epsilon * mean``."""

    epsilon: float = 0.1

    def forge(self, view: RoundView) -> Vector:
        """``-epsilon`` times the honest mean."""
        return ipm_update(view.honest, self.epsilon)


@ATTACKS.register("alie")
def _alie(ctx: AttackContext, z: float | None = None) -> LittleIsEnough:
    return LittleIsEnough(z)


@ATTACKS.register("ipm")
def _ipm(ctx: AttackContext, epsilon: float = 0.1) -> InnerProductManipulation:
    return InnerProductManipulation(positive("ipm: epsilon", epsilon))
