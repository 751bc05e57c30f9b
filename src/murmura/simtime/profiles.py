"""Each client's speed and bandwidth, and the seconds one training result took."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from murmura.compress.accounting import BYTES_DOWN, BYTES_UP, dense_bytes

SPEED_STREAM = 0x5EED
"""Seed stream of the speed draw (apart from sampling and training)."""


@dataclass(frozen=True, slots=True)
class Profile:
    """A client's seconds per sample and epoch, and its link in bytes per second."""

    per_sample_s: float
    up_bps: float
    down_bps: float

    def seconds(self, samples: float, bytes_down: float, bytes_up: float) -> float:
        """Receive the model, train on ``samples`` sample-epochs, send the update."""
        return bytes_down / self.down_bps + samples * self.per_sample_s + bytes_up / self.up_bps


def lognormal_speeds(n: int, median: float, sigma: float, seed: int) -> list[float]:
    """``n`` per-sample times, log-normal around ``median`` with shape ``sigma``."""
    rng = np.random.default_rng([seed, SPEED_STREAM])
    return [float(v) for v in median * np.exp(sigma * rng.standard_normal(n))]


def profiles(
    nodes: Sequence[str], per_sample: Sequence[float], up_bps: float, down_bps: float
) -> dict[str, Profile]:
    """One ``Profile`` per node, in order."""
    if len(per_sample) != len(nodes):
        raise ValueError(f"clock.per_sample has {len(per_sample)} values for {len(nodes)} clients")
    return {n: Profile(s, up_bps, down_bps) for n, s in zip(nodes, per_sample, strict=True)}


def fit_seconds(
    profile: Profile, num_examples: int, epochs: int, metrics: Mapping[str, float], size: int
) -> float:
    """Seconds of one fit: its bytes are those of ``murmura.compress.accounting``."""
    down = float(metrics.get(BYTES_DOWN, dense_bytes(size)))
    up = float(metrics.get(BYTES_UP, dense_bytes(size)))
    seconds = profile.seconds(num_examples * epochs, down, up)
    assert math.isfinite(seconds)
    return seconds
