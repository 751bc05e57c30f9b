"""The released statistics of a federation, per feature and per label, and their JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from murmura.analytics.query import StatsQuery
from murmura.analytics.summary import F64, Summary


@dataclass(frozen=True, slots=True)
class FederatedStats:
    """Count, mean, population variance, min/max and histograms per feature; label counts.

    ``variance`` divides by the count (as ``numpy.var`` and a standard scaler do).
    ``site_labels`` maps each site to its label counts: the federation's non-IID picture;
    None under secure aggregation, which hides every site's own sums. ``epsilon`` is the DP
    cost of this release at ``delta`` (None without noise).
    """

    count: float
    mean: F64
    variance: F64
    edges: F64
    """(d, bins + 1) bin edges of each feature's histogram."""
    hist: F64
    labels: F64
    sites: int
    minimum: F64 | None = None
    maximum: F64 | None = None
    site_labels: Mapping[str, F64] | None = None
    secure: bool = False
    epsilon: float | None = None
    delta: float | None = None
    failures: Mapping[str, str] = field(default_factory=dict)

    @property
    def features(self) -> int:
        """Number of features d."""
        return int(self.mean.shape[0])

    def to_json(self) -> dict[str, object]:
        """Plain JSON (lists and numbers; an undefined mean or variance is null)."""
        return {
            "count": self.count,
            "sites": self.sites,
            "secure_aggregation": self.secure,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "features": [self._feature(j) for j in range(self.features)],
            "labels": self.labels.tolist(),
            "site_labels": (
                None
                if self.site_labels is None
                else {k: v.tolist() for k, v in sorted(self.site_labels.items())}
            ),
            "failures": dict(sorted(self.failures.items())),
        }

    def _feature(self, j: int) -> dict[str, object]:
        out: dict[str, object] = {
            "mean": _num(self.mean[j]),
            "variance": _num(self.variance[j]),
            "edges": self.edges[j].tolist(),
            "hist": self.hist[j].tolist(),
        }
        if self.minimum is not None and self.maximum is not None:
            out["min"], out["max"] = _num(self.minimum[j]), _num(self.maximum[j])
        return out


def _num(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def finish(
    s: Summary,
    query: StatsQuery,
    sites: int,
    site_labels: Mapping[str, F64] | None = None,
    failures: Mapping[str, str] | None = None,
) -> FederatedStats:
    """Turn a federation's merged summary into its statistics (no privacy figures yet)."""
    low, high = query.bounds(s.features)
    edges = np.linspace(low, high, query.bins + 1, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(s.count > 0, s.total / s.count, np.nan)
        variance = np.where(s.count > 0, s.m2 / s.count, np.nan)
    return FederatedStats(
        s.count, mean, variance, edges, s.hist, s.labels, sites, s.minimum, s.maximum,
        site_labels, failures=dict(failures or {}),
    )  # fmt: skip
