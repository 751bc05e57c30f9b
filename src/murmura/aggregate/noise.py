"""Seeded Gaussian noise for aggregation rules that add it (weak DP, FLAME).

A rule is a pure function of its inputs, so its noise is drawn from ``seed`` and a digest of
the rows: the same round gives the same model (determinism), and every round gets fresh
noise without any state to checkpoint.
"""

from __future__ import annotations

import hashlib

import numpy as np

from murmura.aggregate.base import Matrix, Vector


def rows_digest(updates: Matrix) -> int:
    """A 64-bit digest of the rows' bytes."""
    h = hashlib.blake2b(np.ascontiguousarray(updates, dtype=np.float32).tobytes(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def gaussian_noise(updates: Matrix, sigma: float, seed: int) -> Vector:
    """``N(0, sigma^2 I)`` of the rows' width, drawn from ``seed`` and the rows' digest."""
    rng = np.random.default_rng([int(seed), rows_digest(updates)])
    draw = rng.standard_normal(int(updates.shape[1]))
    noise: Vector = np.asarray(draw * sigma, dtype=np.float32)
    return noise
