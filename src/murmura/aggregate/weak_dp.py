"""Norm bounding with weak differential privacy, a backdoor defence.

Sun et al. 2019, "Can You Really Backdoor Federated Learning?": clip each update to L2 norm
``bound``, average, add ``N(0, sigma^2)``.

The small noise is not a privacy guarantee (no accountant runs); it blurs the narrow
directions a backdoor needs. Defaults are the paper's: ``sigma = 0.025``.
"""

from __future__ import annotations

from murmura.aggregate.base import AGGREGATORS, Aggregator, Matrix, Rule, Vector
from murmura.aggregate.clipping import check_positive, norm_bounding
from murmura.aggregate.noise import gaussian_noise
from murmura.errors import AggregationError


def weak_dp(
    updates: Matrix, weights: Vector, bound: float = 1.0, sigma: float = 0.025, seed: int = 0
) -> Vector:
    """Return ``norm_bounding(updates, weights, bound)`` plus seeded ``N(0, sigma^2 I)`` noise."""
    check_positive("weak_dp", "bound", bound)
    check_sigma(sigma)
    out: Vector = norm_bounding(updates, weights, bound) + gaussian_noise(updates, sigma, seed)
    return out


def check_sigma(sigma: float) -> None:
    """Raise ``AggregationError`` unless ``sigma`` is a finite number >= 0."""
    if not (isinstance(sigma, int | float) and 0 <= sigma < float("inf")):
        raise AggregationError(f"weak_dp: sigma = {sigma!r} must be a finite number >= 0")


@AGGREGATORS.register("weak_dp")
def _weak_dp_rule(bound: float = 1.0, sigma: float = 0.025, seed: int = 0) -> Aggregator:
    check_positive("weak_dp", "bound", bound)
    check_sigma(sigma)
    return Rule("weak_dp", weak_dp, {"bound": bound, "sigma": sigma, "seed": int(seed)})
