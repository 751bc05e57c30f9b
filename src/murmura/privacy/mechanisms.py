"""Gaussian mechanisms on client updates: central DP-FedAvg and local DP.

Central DP follows DP-FedAvg (McMahan et al. 2018, "Learning differentially private recurrent
language models"): every client delta is clipped to L2 norm ``C``, the clipped deltas are
summed, Gaussian noise ``N(0, (z C)^2)`` is added to the sum, and the result is divided by the
*expected* cohort size ``q N``. Dividing by the expected rather than the realised count keeps
the sensitivity of the estimate fixed under Poisson sampling, which is what the accountant
assumes. Local DP moves the clip and the noise onto the client, so nothing un-noised ever
leaves the node.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from murmura.privacy.clipping import clip_rows, clip_vector

Matrix = NDArray[np.float32]
Vector = NDArray[np.float32]

log = logging.getLogger(__name__)


def _check(noise_multiplier: float, clip_norm: float) -> None:
    if not np.isfinite(noise_multiplier) or noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
    if not np.isfinite(clip_norm) or clip_norm <= 0:
        raise ValueError(f"clip_norm must be a positive finite number, got {clip_norm!r}")


def gaussian_noise(
    shape: tuple[int, ...], std: float, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Draw ``N(0, std^2)`` noise of ``shape`` as float32 from a seeded generator."""
    if std == 0:
        return np.zeros(shape, dtype=np.float32)
    return rng.normal(0.0, std, size=shape).astype(np.float32)


def noised_mean(
    clipped_sum: Vector,
    *,
    clip_norm: float,
    noise_multiplier: float,
    expected_cohort_size: float,
    rng: np.random.Generator,
) -> Vector:
    """Add ``N(0, (z C)^2)`` to a sum of clipped updates and divide by the expected cohort.

    This is the server half of DP-FedAvg for the streaming path, where clipped updates are
    accumulated into a running sum as they arrive (or unmasked as a sum by secure aggregation).
    """
    _check(noise_multiplier, clip_norm)
    if not expected_cohort_size > 0:
        raise ValueError(f"expected_cohort_size must be > 0, got {expected_cohort_size!r}")
    std = noise_multiplier * clip_norm
    noisy = clipped_sum.astype(np.float32) + gaussian_noise(clipped_sum.shape, std, rng)
    return (noisy / np.float32(expected_cohort_size)).astype(np.float32)


def central_dp_mean(
    updates: Matrix,
    *,
    clip_norm: float,
    noise_multiplier: float,
    expected_cohort_size: float,
    rng: np.random.Generator,
) -> Vector:
    """DP-FedAvg on an ``(n, d)`` matrix of deltas: clip rows, sum, noise, divide by ``q N``."""
    clipped, norms = clip_rows(updates, clip_norm)
    clipped_count = int((norms > clip_norm).sum())
    log.debug(
        "central DP: %d of %d updates clipped to %.4g, noise std %.4g",
        clipped_count,
        updates.shape[0],
        clip_norm,
        noise_multiplier * clip_norm,
    )
    total = clipped.sum(axis=0, dtype=np.float64).astype(np.float32)
    return noised_mean(
        total,
        clip_norm=clip_norm,
        noise_multiplier=noise_multiplier,
        expected_cohort_size=expected_cohort_size,
        rng=rng,
    )


def local_dp_update(
    update: Vector, *, clip_norm: float, noise_multiplier: float, rng: np.random.Generator
) -> Vector:
    """Local DP on the client: clip its own delta to ``C`` and add ``N(0, (z C)^2)``.

    Each release is a Gaussian mechanism with L2 sensitivity ``C`` against the zero update
    (``2 C`` between any two updates), so account it with noise multiplier ``z`` under
    add/remove, or ``z / 2`` under replace-one.
    """
    _check(noise_multiplier, clip_norm)
    clipped, _ = clip_vector(update, clip_norm)
    return clipped + gaussian_noise(clipped.shape, noise_multiplier * clip_norm, rng)


@dataclass(frozen=True, slots=True)
class CentralDP:
    """Parameters of DP-FedAvg for one run: clip norm, noise multiplier, expected cohort."""

    clip_norm: float
    noise_multiplier: float
    expected_cohort_size: float

    def __post_init__(self) -> None:
        _check(self.noise_multiplier, self.clip_norm)
        if not self.expected_cohort_size > 0:
            raise ValueError(f"expected_cohort_size must be > 0, got {self.expected_cohort_size!r}")

    @property
    def noise_std(self) -> float:
        """Standard deviation of the noise added to the clipped sum: ``z * C``."""
        return self.noise_multiplier * self.clip_norm

    def aggregate(self, updates: Matrix, rng: np.random.Generator) -> Vector:
        """Clip, sum, noise and average the rows of ``updates``."""
        return central_dp_mean(
            updates,
            clip_norm=self.clip_norm,
            noise_multiplier=self.noise_multiplier,
            expected_cohort_size=self.expected_cohort_size,
            rng=rng,
        )

    def finalize(self, clipped_sum: Vector, rng: np.random.Generator) -> Vector:
        """Noise and average a running sum of already-clipped updates."""
        return noised_mean(
            clipped_sum,
            clip_norm=self.clip_norm,
            noise_multiplier=self.noise_multiplier,
            expected_cohort_size=self.expected_cohort_size,
            rng=rng,
        )
