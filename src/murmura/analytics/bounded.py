"""Summaries as bounded plain sums: what SecAgg+ can add up and the Gaussian mechanism can noise.

A row contributes ``f(row) = [1, u_j, u_j^2, one-hot bin of each feature, one-hot label]``
with ``u_j = clip(x_j, low_j, high_j) / B_j`` and ``B_j = max(|low_j|, |high_j|)``, so every
coordinate lies in [-1, 1] and ``||f(row)||_2 <= sqrt(1 + 3 d + [labels])``: the L2
sensitivity of the sum to one row (Dwork and Roth 2014, the Gaussian mechanism, section 3.5.3).
The M2 of a ``Summary`` is rebuilt from the sum of squares (``M2 = S2 - S1^2 / n``), which
loses the Chan merge's precision: the private paths trade it for their guarantees. Min and max
are not sums and have no bounded sensitivity, so they are never part of this form.
"""

from __future__ import annotations

import math

import numpy as np

from murmura.analytics.query import StatsQuery
from murmura.analytics.summary import F64, Summary


def feature_scale(query: StatsQuery, features: int) -> F64:
    """``B_j = max(|low_j|, |high_j|)`` per feature: the clipped values' largest magnitude."""
    low, high = query.bounds(features)
    return np.maximum(np.abs(low), np.abs(high))


def to_bounded(s: Summary, scale: F64) -> F64:
    """``[n, S1 / B, S2 / B^2, hist, labels]`` of a summary of clipped rows, flat."""
    mean = s.total / s.count if s.count else np.zeros_like(s.total)
    sumsq = s.m2 + s.count * mean**2
    parts = [np.array([s.count]), s.total / scale, sumsq / scale**2, s.hist.ravel(), s.labels]
    return np.concatenate(parts)


def from_bounded(v: F64, scale: F64, bins: int, classes: int) -> Summary:
    """The summary of a (possibly noised) sum of ``to_bounded`` vectors (no min/max)."""
    d = scale.shape[0]
    if v.shape != (1 + d * (2 + bins) + classes,):
        raise ValueError(f"a bounded sum of {v.shape} does not fit {d} features, {bins} bins")
    count = float(v[0])
    total = v[1 : 1 + d] * scale
    sumsq = v[1 + d : 1 + 2 * d] * scale**2
    m2 = np.maximum(sumsq - total**2 / count, 0.0) if count > 0 else np.zeros(d)
    hist = v[1 + 2 * d : 1 + d * (2 + bins)].reshape(d, bins).copy()
    return Summary(count, total, m2, hist, v[1 + d * (2 + bins) :].copy())


def sensitivity(features: int, classes: int) -> float:
    """L2 sensitivity of the bounded sum to adding or removing one row."""
    return math.sqrt(1 + 3 * features + (1 if classes else 0))


def gaussian_noised(
    s: Summary, query: StatsQuery, noise_multiplier: float, rng: np.random.Generator
) -> Summary:
    """``s`` after the Gaussian mechanism: ``N(0, (z * sensitivity)^2)`` on every bounded sum."""
    scale = feature_scale(query, s.features)
    v = to_bounded(s, scale)
    sigma = noise_multiplier * sensitivity(s.features, query.classes)
    return from_bounded(v + rng.normal(0.0, sigma, v.shape), scale, query.bins, query.classes)


def statistics_epsilon(noise_multiplier: float, delta: float, accountant: str = "rdp") -> float:
    """Epsilon of one release of the noised sums (every row in it: sample rate 1)."""
    from murmura.privacy.accountant import create_accountant

    acc = create_accountant(accountant)
    acc.step(noise_multiplier, 1.0)
    return acc.get_epsilon(delta)
