"""The ``[stats]`` table: federated statistics (``murmura.analytics``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from murmura.config.base import Section


class StatsSection(Section):
    """[stats]: a federated statistics round (``murmura stats``; before training when enabled).

    Per feature: count, mean, variance, min/max (``minmax``) and a histogram of ``bins`` equal
    bins over ``[low, high]`` (a number for every feature, or one per feature); and the label
    histogram over ``classes`` (None: from the task's test labels). ``enabled = true`` runs it
    before the first round of ``murmura run`` and ``murmura server`` and writes ``stats.json``.
    ``secure_aggregation = true`` sums the sites' statistics with SecAgg+: values are clipped
    to ``[low, high]`` and a site's rows to ``max_rows`` (public bounds; None: the largest
    client's count, simulation only). ``noise_multiplier > 0`` adds Gaussian noise to the sums
    (example-level DP, values clipped to ``[low, high]``), accounted by ``[privacy]
    accountant`` at ``delta``. Min/max are neither sums nor of bounded sensitivity: refused
    with either. ``standardise = true`` (with ``enabled``) fits the ``tabular`` task's
    ``mean``/``scale`` from these statistics before training: every client, simulated or a
    deployed site, standardises its numeric features with the same federated mean and
    standard deviation, and no site shares a raw value.
    """

    enabled: bool = False
    bins: int = Field(10, ge=1, le=1000)
    low: float | list[float] = 0.0
    high: float | list[float] = 1.0
    minmax: bool = True
    classes: int | None = Field(None, ge=1)
    secure_aggregation: bool = False
    max_rows: int | None = Field(None, ge=1)
    noise_multiplier: float = Field(0.0, ge=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    standardise: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> StatsSection:
        low = self.low if isinstance(self.low, list) else [self.low]
        high = self.high if isinstance(self.high, list) else [self.high]
        if not low or not high:
            raise ValueError("stats.low and stats.high need at least one value")
        if len(low) != len(high) and 1 not in (len(low), len(high)):
            raise ValueError(f"stats.low has {len(low)} values, stats.high {len(high)}")
        n = max(len(low), len(high))
        low, high = low * (n // len(low)), high * (n // len(high))
        for j, (lo, hi) in enumerate(zip(low, high, strict=True)):
            if not lo < hi:
                raise ValueError(f"stats.low[{j}] = {lo} is not below stats.high[{j}] = {hi}")
        if self.standardise and not self.enabled:
            raise ValueError(
                "stats.standardise = true fits the task's scaling from the statistics round: "
                "set stats.enabled = true too"
            )
        private = "secure_aggregation = true" if self.secure_aggregation else None
        if self.noise_multiplier > 0:
            private = "noise_multiplier > 0"
        if self.minmax and private is not None:
            raise ValueError(
                f"stats.minmax = true cannot be honoured with stats.{private}: a minimum or "
                "maximum is not a sum (SecAgg+ only sums) and one value can move it arbitrarily "
                "(no bounded DP sensitivity); set stats.minmax = false"
            )
        return self
