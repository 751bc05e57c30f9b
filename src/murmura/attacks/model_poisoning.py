"""Update-replacing attacks: sign flipping, Gaussian noise, scaling, malformed updates."""

from __future__ import annotations

import zlib
from typing import Literal

import numpy as np

from murmura.attacks.base import ATTACKS, AttackContext, UpdateAttack
from murmura.client import Client
from murmura.errors import ConfigError
from murmura.seeding import derive_seed
from murmura.types import FitIns, FitRes, Vector


class SignFlip(UpdateAttack):
    """Sign flipping: send ``-scale * u`` for the honest ``u`` (Allen-Zhu et al. 2020)."""

    def __init__(self, inner: Client, scale: float = 1.0) -> None:
        super().__init__(inner)
        if not scale > 0:
            raise ConfigError(f"sign_flip: scale = {scale} must be > 0")
        self.scale = scale

    def corrupt(self, ins: FitIns, update: Vector) -> Vector:
        """The flipped update."""
        return (-np.float32(self.scale) * update).astype(np.float32)


class GaussianNoise(UpdateAttack):
    """Send a random ``N(0, std^2)`` vector instead of the update (Blanchard et al. 2017).

    The default ``std = 200`` is the Gaussian Byzantine worker of Blanchard et al.'s experiments.
    """

    def __init__(self, inner: Client, seed: int, std: float = 200.0) -> None:
        super().__init__(inner)
        if not std > 0:
            raise ConfigError(f"gaussian: std = {std} must be > 0")
        self.std, self.seed = std, seed

    def corrupt(self, ins: FitIns, update: Vector) -> Vector:
        """Seeded noise, a fresh draw per (round, node)."""
        rng = np.random.default_rng(
            derive_seed(self.seed, ins.round, zlib.crc32(self.node_id.encode()))
        )
        return rng.normal(0.0, self.std, size=update.shape).astype(np.float32)


class Scaling(UpdateAttack):
    """Model replacement: boost by ``gamma = n / server_lr`` (Bagdasaryan et al. 2020)."""

    def __init__(self, inner: Client, boost: float) -> None:
        super().__init__(inner)
        if not boost > 0:
            raise ConfigError(f"scaling: boost = {boost} must be > 0")
        self.boost = boost

    def corrupt(self, ins: FitIns, update: Vector) -> Vector:
        """The boosted update."""
        return (np.float32(self.boost) * update).astype(np.float32)


Malformation = Literal["nan", "inf", "short", "float64"]


class Malformed(UpdateAttack):
    """Send a broken update (NaN, Inf, one entry short, float64) that validation must reject."""

    def __init__(self, inner: Client, mode: Malformation = "nan") -> None:
        super().__init__(inner)
        if mode not in ("nan", "inf", "short", "float64"):
            raise ConfigError(f"malformed: mode = {mode!r}; valid: nan, inf, short, float64")
        self.mode = mode

    def corrupt(self, ins: FitIns, update: Vector) -> Vector:
        """The update with the chosen defect."""
        if self.mode == "short":
            return update[:-1].copy()
        if self.mode == "float64":
            return update.astype(np.float64)
        out = update.copy()
        out[:: max(1, out.size // 10)] = np.nan if self.mode == "nan" else np.inf
        return out


class InflatedCount(UpdateAttack):
    """Claim ``factor`` times the real example count, to buy weight in weighted rules."""

    def __init__(self, inner: Client, factor: float = 100.0) -> None:
        super().__init__(inner)
        if not factor >= 1:
            raise ConfigError(f"inflate: factor = {factor} must be >= 1")
        self.factor = factor

    def fit(self, ins: FitIns) -> FitRes:
        """The honest update with an inflated ``num_examples``."""
        res = self.inner.fit(ins)
        return FitRes(res.update, int(res.num_examples * self.factor), res.metrics)


@ATTACKS.register("sign_flip")
def _sign_flip(inner: Client, ctx: AttackContext, scale: float = 1.0) -> Client:
    return SignFlip(inner, scale)


@ATTACKS.register("gaussian")
def _gaussian(inner: Client, ctx: AttackContext, std: float = 200.0) -> Client:
    return GaussianNoise(inner, ctx.seed, std)


@ATTACKS.register("scaling")
def _scaling(inner: Client, ctx: AttackContext, boost: float | None = None) -> Client:
    # Bagdasaryan et al.'s gamma = n / eta: n participants per round, server lr eta.
    return Scaling(inner, ctx.cohort_size / ctx.server_lr if boost is None else boost)


@ATTACKS.register("inflate")
def _inflate(inner: Client, ctx: AttackContext, factor: float = 100.0) -> Client:
    return InflatedCount(inner, factor)


@ATTACKS.register("malformed")
def _malformed(inner: Client, ctx: AttackContext, mode: Malformation = "nan") -> Client:
    return Malformed(inner, mode)
