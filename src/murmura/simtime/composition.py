"""Which settings compose with ``[clock]``, decided when the config loads, with the reason."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from murmura.config import Config


def check_clock(cfg: Config) -> None:
    """Raise ``ValueError`` naming the first setting that ``[clock]`` cannot honour."""
    c = cfg.clock
    if not c.enabled:
        return
    if cfg.topology.kind != "star":
        raise ValueError(
            f"clock.enabled = true with topology.kind = {cfg.topology.kind!r}: the simulated "
            "clock times a star's clients; use topology.kind = 'star'"
        )
    if c.speed == "given" and len(c.per_sample) != cfg.partition.num_clients:
        raise ValueError(
            f"clock.per_sample has {len(c.per_sample)} values for partition.num_clients = "
            f"{cfg.partition.num_clients}"
        )
    central = cfg.privacy.mode == "central"
    if c.mode == "sync":
        if central and (c.availability != "always" or c.over_selection > 1):
            raise ValueError(
                "privacy.mode = 'central' with clock.availability != 'always' or "
                "clock.over_selection > 1: the cohort is then drawn among the reachable clients "
                "and cut to the first to finish, not the Poisson sample the accountant assumes"
            )
        return
    per_aggregation = 1 if c.algorithm == "fedasync" else c.buffer_size
    if cfg.strategy.min_clients > per_aggregation:
        raise ValueError(
            f"strategy.min_clients = {cfg.strategy.min_clients} with clock.algorithm = "
            f"{c.algorithm!r}: each aggregation has {per_aggregation} update(s); set "
            f"strategy.min_clients <= {per_aggregation}"
        )
    if cfg.secagg.enabled:
        raise ValueError(
            "secagg.enabled = true with clock.mode = 'async': secure aggregation needs a fixed "
            "cohort per round; asynchronous updates arrive one by one"
        )
    if central and c.algorithm == "fedasync":
        raise ValueError(
            "privacy.mode = 'central' with clock.algorithm = 'fedasync': each aggregation would "
            "release one client's update; use clock.algorithm = 'fedbuff'"
        )
    if central:
        q = c.buffer_size / cfg.partition.num_clients
        if abs(cfg.strategy.fraction - q) > 1e-9:
            raise ValueError(
                f"privacy.mode = 'central' with FedBuff: set strategy.fraction = "
                f"clock.buffer_size / partition.num_clients = {q:g}; the accountant charges "
                "each aggregation as a Poisson sample of that rate"
            )
    if cfg.anomaly.enabled:
        raise ValueError("anomaly.enabled = true with clock.mode = 'async': not supported yet")
