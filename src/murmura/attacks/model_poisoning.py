"""Update-replacing attacks: sign flipping, Gaussian noise, scaling, malformed, inflated count.

Each is an ``UpdateAttack``: a pure map from the honest result to the malicious one. A star
or tree client sends it as its update; a peer sends ``reference + update``
(``murmura.attacks.peer_sender``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

from murmura.attacks.base import ATTACKS, AttackContext, positive
from murmura.errors import ConfigError
from murmura.seeding import derive_seed
from murmura.types import FitRes, Vector


def sign_flip(update: Vector, scale: float = 1.0) -> Vector:
    """``-scale * u``: the sign-flipping attack (Allen-Zhu et al. 2020; Karimireddy 2021)."""
    return (-np.float32(scale) * update).astype(np.float32)


@dataclass(frozen=True, slots=True)
class SignFlip:
    """Send ``-scale * u`` for the honest update ``u``."""

    scale: float = 1.0

    def corrupt(self, round_: int, node: str, res: FitRes) -> FitRes:
        """The flipped update."""
        return FitRes(sign_flip(res.update, self.scale), res.num_examples, res.metrics)


@dataclass(frozen=True, slots=True)
class GaussianNoise:
    """Send a random ``N(0, std^2)`` vector instead of the update (Blanchard et al. 2017).

    The default ``std = 200`` is the Gaussian Byzantine worker of Blanchard et al.'s
    experiments; the draw is seeded per (run seed, round, node).
    """

    seed: int
    std: float = 200.0

    def corrupt(self, round_: int, node: str, res: FitRes) -> FitRes:
        """Seeded noise, a fresh draw per (round, node)."""
        rng = np.random.default_rng(derive_seed(self.seed, round_, zlib.crc32(node.encode())))
        noise = rng.normal(0.0, self.std, size=res.update.shape).astype(np.float32)
        return FitRes(noise, res.num_examples, res.metrics)


@dataclass(frozen=True, slots=True)
class Scaling:
    """Model replacement's boost: send ``gamma * u`` (Bagdasaryan et al. 2020)."""

    boost: float

    def corrupt(self, round_: int, node: str, res: FitRes) -> FitRes:
        """The boosted update."""
        out = (np.float32(self.boost) * res.update).astype(np.float32)
        return FitRes(out, res.num_examples, res.metrics)


def replacement_boost(ctx: AttackContext) -> float:
    """Bagdasaryan et al.'s ``gamma = n / eta``: ``n`` participants per round, server lr ``eta``."""
    return ctx.cohort_size / ctx.server_lr


Malformation = Literal["nan", "inf", "short", "float64"]


@dataclass(frozen=True, slots=True)
class Malformed:
    """Send a broken update (NaN, Inf, one entry short, float64) that validation must reject."""

    mode: Malformation = "nan"

    def corrupt(self, round_: int, node: str, res: FitRes) -> FitRes:
        """The update with the chosen defect."""
        update = res.update
        if self.mode == "short":
            out = update[:-1].copy()
        elif self.mode == "float64":
            out = update.astype(np.float64)
        else:
            out = update.copy()
            out[:: max(1, out.size // 10)] = np.nan if self.mode == "nan" else np.inf
        return FitRes(out, res.num_examples, res.metrics)


@dataclass(frozen=True, slots=True)
class InflatedCount:
    """Claim ``factor`` times the real example count, to buy weight in weighted rules."""

    factor: float = 100.0

    def corrupt(self, round_: int, node: str, res: FitRes) -> FitRes:
        """The honest update with an inflated ``num_examples``."""
        return FitRes(res.update, int(res.num_examples * self.factor), res.metrics)


@ATTACKS.register("sign_flip")
def _sign_flip(ctx: AttackContext, scale: float = 1.0) -> SignFlip:
    return SignFlip(positive("sign_flip: scale", scale))


@ATTACKS.register("gaussian")
def _gaussian(ctx: AttackContext, std: float = 200.0) -> GaussianNoise:
    return GaussianNoise(ctx.seed, positive("gaussian: std", std))


@ATTACKS.register("scaling")
def _scaling(ctx: AttackContext, boost: float | None = None) -> Scaling:
    return Scaling(replacement_boost(ctx) if boost is None else positive("scaling: boost", boost))


@ATTACKS.register("inflate")
def _inflate(ctx: AttackContext, factor: float = 100.0) -> InflatedCount:
    if not factor >= 1:
        raise ConfigError(f"inflate: factor = {factor} must be >= 1")
    return InflatedCount(factor)


@ATTACKS.register("malformed")
def _malformed(ctx: AttackContext, mode: Malformation = "nan") -> Malformed:
    if mode not in ("nan", "inf", "short", "float64"):
        raise ConfigError(f"malformed: mode = {mode!r}; valid: nan, inf, short, float64")
    return Malformed(mode)
