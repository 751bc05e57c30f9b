"""Config table [clock]: simulated time, heterogeneous clients and asynchronous aggregation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from murmura.config.base import Section


class ClockSection(Section):
    """[clock]: a simulated clock for a star simulation (``murmura.simtime``).

    Each client trains at ``per_sample_s`` seconds per sample and epoch (``speed =
    'lognormal'``: drawn per client around that median with log-normal ``sigma``; ``'given'``:
    ``per_sample`` lists one value per client), is reachable when its ``availability`` says
    (``'always'``; ``'diurnal'``: on for ``on_fraction`` of each ``period_s``, at a random
    phase per client; ``'trace'``: the (client, start, end) rows of the CSV ``trace``) and
    moves the model and its update at ``down_bps`` and ``up_bps`` bytes per second (the bytes
    of [compression]). Every round's metrics carry ``sim_time``.

    ``mode = 'sync'``: rounds wait for their cohort, or end at ``deadline_s`` after they start;
    ``over_selection`` samples that many times the cohort and keeps the first to finish.
    ``mode = 'async'``: ``concurrency`` clients train at once; ``algorithm = 'fedasync'``
    (Xie et al. 2019) mixes each arrival in with weight ``mixing`` times the staleness
    function (times the [strategy]'s ``server_lr``), ``'fedbuff'`` (Nguyen et al. 2022)
    aggregates every ``buffer_size`` arrivals
    with the [strategy]'s rule and server learning rate, each update scaled by the staleness
    function (``staleness``: constant, polynomial ``(1 + s)^-a``, hinge with ``a`` and
    ``b``). An update staler than ``max_staleness`` model versions is refused. In async mode
    ``run.rounds`` counts aggregations. Central DP composes with FedBuff only: noise is added
    per buffer and the accountant is charged once per aggregation as a Poisson sample of rate
    ``strategy.fraction``, which must equal ``buffer_size / num_clients``; arrivals favour
    fast, reachable clients, so that rate is an assumption, not a guarantee. Secure
    aggregation is refused in async mode; robust rules apply per buffer. Deployed, ``murmura
    server`` runs ``mode = 'async'`` in real time with the same keys (any idle worker gets
    the current model; ``[server] round_timeout`` bounds each worker's fit; federated
    evaluation and ``checkpoint_every`` > 1 are refused); the simulated clients' keys (speed,
    availability, bandwidths) and ``mode = 'sync'`` are simulation only.
    """

    enabled: bool = False
    speed: Literal["lognormal", "given"] = "lognormal"
    per_sample_s: float = Field(0.001, gt=0)
    sigma: float = Field(0.0, ge=0)
    per_sample: list[float] = Field(default_factory=list)
    availability: Literal["always", "diurnal", "trace"] = "always"
    period_s: float = Field(86400.0, gt=0)
    on_fraction: float = Field(1.0, gt=0, le=1)
    trace: str | None = None
    up_bps: float = Field(1e6, gt=0)
    down_bps: float = Field(1e7, gt=0)
    mode: Literal["sync", "async"] = "sync"
    deadline_s: float | None = Field(None, gt=0)
    over_selection: float = Field(1.0, ge=1)
    algorithm: Literal["fedasync", "fedbuff"] = "fedbuff"
    concurrency: int | None = Field(None, ge=1)
    buffer_size: int = Field(10, ge=1)
    mixing: float = Field(0.6, gt=0, le=1)
    staleness: Literal["constant", "polynomial", "hinge"] = "polynomial"
    a: float = Field(0.5, ge=0)
    b: float = Field(4.0, ge=0)
    max_staleness: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> ClockSection:
        if self.speed == "given" and not self.per_sample:
            raise ValueError("clock.speed = 'given' needs clock.per_sample (one per client)")
        if self.speed != "given" and self.per_sample:
            raise ValueError("clock.per_sample needs clock.speed = 'given'")
        if any(v <= 0 for v in self.per_sample):
            raise ValueError("clock.per_sample: every value must be > 0")
        if (self.availability == "trace") != (self.trace is not None):
            raise ValueError("clock.trace (a CSV path) goes with clock.availability = 'trace'")
        # a key counts as given when it differs from its default: a resolved config written
        # out in full (a run folder's config.toml) names every key and must load again
        fields = type(self).model_fields
        given = {k for k in self.model_fields_set if getattr(self, k) != fields[k].default}
        stray = sorted(ASYNC_ONLY & given)
        if self.mode == "sync" and stray:
            raise ValueError(f"clock.{stray[0]} needs clock.mode = 'async'")
        if self.speed == "given" and {"per_sample_s", "sigma"} & given:
            raise ValueError("clock.per_sample_s and sigma need clock.speed = 'lognormal'")
        if self.availability != "diurnal" and {"period_s", "on_fraction"} & given:
            raise ValueError("clock.period_s and on_fraction need clock.availability = 'diurnal'")
        if self.mode == "async" and (self.deadline_s is not None or self.over_selection > 1):
            raise ValueError(
                "clock.deadline_s and clock.over_selection are for mode = 'sync'; async "
                "rounds have no deadline (use clock.max_staleness)"
            )
        return self


ASYNC_ONLY = frozenset(
    {"algorithm", "concurrency", "buffer_size", "mixing", "staleness", "a", "b", "max_staleness"}
)
"""Keys that only async mode reads."""
