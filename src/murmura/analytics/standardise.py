"""Feature standardisation fitted from federated statistics, so no site shares a raw value.

Every site gets the same ``(mean, scale)`` and maps ``x -> (x - mean) / scale``: the scaling
a standard scaler fitted on the pooled data would apply, learnt from the sites' sums alone.
A task takes the pair as a plain argument, for example (``[stats] enabled = true``)::

    stats = simulate_statistics(data, plan)          # or the deployed statistics round
    mean, scale = standardisation(stats)
    task = TabularTask(..., mean=mean, scale=scale)  # applied to every site's rows
"""

from __future__ import annotations

import numpy as np

from murmura.analytics.result import FederatedStats
from murmura.analytics.summary import F64
from murmura.errors import ConfigError

MIN_SCALE = 1e-12
"""A feature whose standard deviation is below this is constant: its scale is 1."""


def standardisation(stats: FederatedStats) -> tuple[F64, F64]:
    """``(mean, scale)`` per feature: the federated mean and standard deviation (1 if constant).

    Raises ``ConfigError`` when the statistics have no rows (nothing to fit).
    """
    if not stats.count > 0 or not np.isfinite(stats.mean).all():
        raise ConfigError("cannot fit a standardisation: the statistics have no rows")
    std = np.sqrt(np.maximum(stats.variance, 0.0))
    scale = np.where(std > MIN_SCALE, std, 1.0)
    return stats.mean.astype(np.float64), scale.astype(np.float64)
