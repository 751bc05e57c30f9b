"""Differential privacy for peer-to-peer learning: each peer privatises what it shares.

Threat model: a peer's neighbours, and anyone who sees the messages, are not trusted; there
is no trusted aggregator to add noise, so only the peers' own mechanisms protect their data.
The guarantee is per peer's data:

- ``mode = "local"``, **peer-level** (a peer's whole dataset): after local training the peer
  clips the change its training made to ``C`` and adds ``N(0, (z C)^2)``
  (``local_dp_update``), and keeps the privatised model as its own as well as sending it.
  Everything it sends later is post-processing of privatised steps (its own and its
  neighbours'), so each round is one Gaussian mechanism with sensitivity ``C`` at sample rate
  1: every peer releases in every round (a peer that misses an exchange is still charged).
  The training loss, computed on private data, is dropped as in the star topology.
- ``dp_sgd = true``, **record-level** (one training sample): every local step is DP-SGD on a
  Poisson batch at rate ``q = B / n`` (Abadi et al. 2016); D-PSGD takes
  ``topology.local_steps`` such steps per round, gossip ``epochs * round(n / B)``. The budget
  (``sample_epsilon``) is that of the smallest peer, whose batches are the largest share of
  its data.

Both use the star topology's budgets (``murmura.privacy.wiring``), so epsilon is reported and
``target_epsilon`` stops the run exactly as there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from murmura.client import FlatModel
from murmura.config import Config
from murmura.privacy.budget import PrivacyBudget
from murmura.privacy.checks import client_budget
from murmura.privacy.dp_client import DPSGDParams, dp_sgd_schedule, train_dp_sgd
from murmura.privacy.dp_sgd import check_dp_compatible
from murmura.privacy.mechanisms import local_dp_update
from murmura.privacy.wiring import resolve_noise_multiplier, sample_budget
from murmura.seeding import client_generator, derive_seed
from murmura.sim.peer import LocalWork, PeerTrainer, Trainer
from murmura.types import Vector

log = logging.getLogger(__name__)

_PEER_NOISE = 0x9EE2  # keeps a peer's noise stream apart from its training streams


class LocalDPTrainer:
    """A peer whose every local training step is clipped and noised before anyone sees it."""

    def __init__(
        self, inner: Trainer, *, peer: int, clip_norm: float, noise_multiplier: float, seed: int
    ) -> None:
        if not clip_norm > 0 or noise_multiplier < 0:
            raise ValueError(
                f"local DP needs clip_norm > 0 and noise_multiplier >= 0, got "
                f"{clip_norm!r}, {noise_multiplier!r}"
            )
        self.inner, self.peer, self.seed = inner, peer, seed
        self.clip_norm, self.noise_multiplier = clip_norm, noise_multiplier

    @property
    def num_examples(self) -> int:
        """Training examples the peer holds."""
        return self.inner.num_examples

    def train(self, model: FlatModel, weights: Vector, round_: int) -> tuple[Vector, float]:
        """Train as the inner peer; return ``weights`` plus the privatised change, no loss."""
        start = np.asarray(weights, dtype=np.float32)
        trained, _ = self.inner.train(model, start, round_)
        rng = np.random.default_rng(derive_seed(self.seed, round_, self.peer, _PEER_NOISE))
        noised = local_dp_update(
            trained - start,
            clip_norm=self.clip_norm,
            noise_multiplier=self.noise_multiplier,
            rng=rng,
        )
        return (start + noised).astype(np.float32), float("nan")


class DPSGDPeerTrainer(PeerTrainer):
    """A peer that trains with sample-level DP-SGD on Poisson batches of its own data."""

    def __init__(self, base: PeerTrainer, dp: DPSGDParams) -> None:
        super().__init__(base.peer, base.x, base.y, base.task, base.work, base.seed)
        self.dp = dp

    def train(self, model: FlatModel, weights: Vector, round_: int) -> tuple[Vector, float]:
        """DP-SGD from ``weights`` for this round's steps; return new weights and loss."""
        model.set(weights)
        gen = client_generator(self.seed, round_, self.peer)
        _, steps = peer_dp_sgd_schedule(self.num_examples, self.work)
        hp = self.work.hp if self.work.algorithm == "gossip" else replace(self.work.hp, epochs=1)
        loss, _ = train_dp_sgd(model, self.task, self.x, self.y, hp, self.dp, gen, steps)
        return model.get(), loss


def peer_dp_sgd_schedule(num_examples: int, work: LocalWork) -> tuple[float, int]:
    """(sample rate, DP-SGD steps per round) of a peer holding ``num_examples`` samples."""
    rate, steps = dp_sgd_schedule(num_examples, work.hp.batch_size, work.hp.epochs)
    return (rate, steps) if work.algorithm == "gossip" else (rate, work.steps)


def apply_peer_privacy(
    cfg: Config, trainers: Sequence[PeerTrainer], model: FlatModel
) -> tuple[list[Trainer], list[PrivacyBudget]]:
    """The peers and budgets that ``cfg.privacy`` asks for (unchanged and none when off)."""
    p = cfg.privacy
    out: list[Trainer] = list(trainers)
    budgets: list[PrivacyBudget] = []
    if p.dp_sgd:
        check_dp_compatible(model.module)
        dp = DPSGDParams(p.dp_sgd_clip_norm, p.dp_sgd_noise_multiplier)
        out = [DPSGDPeerTrainer(t, dp) for t in trainers]
        smallest = min(t.num_examples for t in trainers)
        budgets.append(sample_budget(cfg, *peer_dp_sgd_schedule(smallest, trainers[0].work)))
    if p.mode == "local":
        z = resolve_noise_multiplier(cfg)
        out = [
            LocalDPTrainer(t, peer=i, clip_norm=p.clip_norm, noise_multiplier=z, seed=cfg.run.seed)
            for i, t in enumerate(out)
        ]
        budgets.insert(0, client_budget(cfg, z))
        log.info("privacy: local DP on every peer, C=%.4g, z=%.4g", p.clip_norm, z)
    return out, budgets
