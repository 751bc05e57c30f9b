"""Adaptive clipping: track a target quantile of update norms under DP.

Andrew et al. 2021, "Differentially private learning with adaptive clipping". Each client
reports one bit, whether its update norm was at most the current clip norm ``C``; the server
noises the count of such clients, estimates the fraction ``b`` under the clip, and updates
``C <- C * exp(-eta * (b - gamma))`` so that ``C`` moves geometrically toward the
``gamma``-quantile of the norms. The count is itself a Gaussian mechanism, so the noise on
the updates is raised a little (``delta_noise_multiplier``) to keep the total privacy of a
round equal to that of noise multiplier ``z``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from murmura.errors import ConfigError

log = logging.getLogger(__name__)

_KIND = "adaptive_clipping"
_VERSION = 1


def delta_noise_multiplier(noise_multiplier: float, count_noise_std: float) -> float:
    """Noise multiplier for the updates so that updates plus count compose to ``z``.

    From Andrew et al. 2021: ``z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)``; the bits are
    centred in the paper, so their sensitivity is 1/2, hence the factor 2.
    """
    if count_noise_std <= 0:
        raise ValueError("count_noise_std must be > 0 to share the budget with the count")
    rest = noise_multiplier**-2 - (2.0 * count_noise_std) ** -2
    if rest <= 0:
        raise ConfigError(
            f"count_noise_std={count_noise_std} is too small for noise_multiplier="
            f"{noise_multiplier}: need count_noise_std > noise_multiplier / 2"
        )
    return float(rest**-0.5)


class AdaptiveClipper:
    """Geometric update of the clip norm toward a target quantile (Andrew et al. 2021)."""

    def __init__(
        self,
        initial_clip_norm: float,
        *,
        expected_cohort_size: float,
        target_quantile: float = 0.5,
        learning_rate: float = 0.2,
        count_noise_std: float = 0.0,
    ) -> None:
        if not initial_clip_norm > 0 or not math.isfinite(initial_clip_norm):
            raise ConfigError(f"initial_clip_norm must be > 0, got {initial_clip_norm!r}")
        if not 0.0 < target_quantile < 1.0:
            raise ConfigError(f"target_quantile must be in (0, 1), got {target_quantile!r}")
        if not learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {learning_rate!r}")
        if count_noise_std < 0:
            raise ConfigError(f"count_noise_std must be >= 0, got {count_noise_std!r}")
        if not expected_cohort_size > 0:
            raise ConfigError(f"expected_cohort_size must be > 0, got {expected_cohort_size!r}")
        self._clip_norm = float(initial_clip_norm)
        self.expected_cohort_size = float(expected_cohort_size)
        self.target_quantile = float(target_quantile)
        self.learning_rate = float(learning_rate)
        self.count_noise_std = float(count_noise_std)
        self.rounds = 0

    @property
    def clip_norm(self) -> float:
        """The clip norm to use in the current round."""
        return self._clip_norm

    def update_from_count(self, count_under: float, rng: np.random.Generator) -> float:
        """Update ``C`` from the (plain) count of clients whose norm was at most ``C``.

        Use this when the bits arrive already summed, e.g. through secure aggregation.
        Returns the new clip norm.
        """
        noisy = float(count_under)
        if self.count_noise_std > 0:
            noisy += float(rng.normal(0.0, self.count_noise_std))
        fraction = noisy / self.expected_cohort_size
        old = self._clip_norm
        self._clip_norm = old * math.exp(-self.learning_rate * (fraction - self.target_quantile))
        self.rounds += 1
        log.debug(
            "adaptive clipping round %d: fraction under clip %.3f, C %.4g -> %.4g",
            self.rounds,
            fraction,
            old,
            self._clip_norm,
        )
        return self._clip_norm

    def update(self, norms: ArrayLike, rng: np.random.Generator) -> float:
        """Update ``C`` from this round's pre-clip update norms; returns the new clip norm."""
        values = np.asarray(norms, dtype=np.float64)
        return self.update_from_count(float((values <= self._clip_norm).sum()), rng)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, checkpointed with the model."""
        return {
            "kind": _KIND,
            "version": _VERSION,
            "clip_norm": self._clip_norm,
            "rounds": self.rounds,
            "target_quantile": self.target_quantile,
            "learning_rate": self.learning_rate,
            "count_noise_std": self.count_noise_std,
            "expected_cohort_size": self.expected_cohort_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the clip norm and round count; refuses a state of another kind."""
        kind = state.get("kind")
        if kind != _KIND or state.get("version") != _VERSION:
            raise ConfigError(
                f"cannot load a state of kind {kind!r} (version {state.get('version')!r}) "
                f"into {_KIND!r} version {_VERSION}"
            )
        for key in ("target_quantile", "learning_rate", "count_noise_std"):
            if state[key] != getattr(self, key):
                log.warning(
                    "adaptive clipping: checkpoint has %s=%r, config has %r; using the config",
                    key,
                    state[key],
                    getattr(self, key),
                )
        self._clip_norm = float(state["clip_norm"])
        self.rounds = int(state["rounds"])
