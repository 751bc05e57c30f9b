"""Local DP around any Learner: the update is clipped and noised before it leaves the node.

One wrapper for star clients, tree leaves and peers (simulated or deployed). Each release
is a Gaussian mechanism on the clipped delta (``local_dp_update``, after the
client half of McMahan et al. 2018): noise ``N(0, (z C)^2)`` drawn from a stream seeded by
(seed, round, client), so runs are reproducible and no two clients or rounds share noise.
Only the noised delta leaves: the example count is reported as 1 (the server then averages
releases uniformly) and the training metrics, computed on private data, are dropped. A peer
keeps and shares its start model plus this release (``murmura.engine.peer_round.local_step``).
"""

from __future__ import annotations

import logging

import numpy as np

from murmura.learner import Learner
from murmura.privacy.mechanisms import local_dp_update
from murmura.seeding import derive_seed
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

log = logging.getLogger(__name__)

CLIENT_NOISE = 0x10CA1
"""Noise stream of star clients and tree leaves (keeps it apart from their training streams)."""
PEER_NOISE = 0x9EE2
"""Noise stream of peers; a separate constant keeps their seeded draws as they always were."""


class LocalDPClient:
    """Wraps a Learner so that only its clipped, noised delta leaves the node."""

    def __init__(
        self,
        inner: Learner,
        *,
        client_index: int,
        clip_norm: float,
        noise_multiplier: float,
        seed: int = 0,
        noise_stream: int = CLIENT_NOISE,
    ) -> None:
        if not clip_norm > 0 or noise_multiplier < 0:
            raise ValueError(
                f"local DP needs clip_norm > 0 and noise_multiplier >= 0, got "
                f"{clip_norm!r}, {noise_multiplier!r}"
            )
        self.inner, self.node_id = inner, inner.node_id
        self.client_index, self.seed, self.noise_stream = client_index, seed, noise_stream
        self.clip_norm, self.noise_multiplier = clip_norm, noise_multiplier

    def fit(self, ins: FitIns) -> FitRes:
        """Train as the inner client, then clip and noise the delta."""
        res = self.inner.fit(ins)
        rng = np.random.default_rng(
            derive_seed(self.seed, ins.round, self.client_index, self.noise_stream)
        )
        noised = local_dp_update(
            res.update, clip_norm=self.clip_norm, noise_multiplier=self.noise_multiplier, rng=rng
        )
        log.debug("node=%s round=%d: local DP release", self.node_id, ins.round)
        return FitRes(update=noised.astype(np.float32), num_examples=1)

    def evaluate(self, weights: Vector) -> EvaluateRes:
        """The inner client's local evaluation (it stays on the node)."""
        return self.inner.evaluate(weights)
