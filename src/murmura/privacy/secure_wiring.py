"""From a ``[secagg]`` config to a ``SecureAggregation`` strategy, and the load-time checks.

Secure aggregation (SecAgg+, Bell et al. 2020) hands the server only the weighted sum of the
round's updates, so every setting that needs an individual update is refused before any
training, with the keys to change: a non-linear aggregator (median, Krum, ...), anomaly
scores, adaptive clipping (it needs each norm), SCAFFOLD's control variates, and topologies
other than the server-client star.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from murmura.errors import ConfigError

if TYPE_CHECKING:  # the config runs check_secagg at load time; a type, not an import cycle
    from murmura.config import Config, SecAggSection
    from murmura.strategy.base import Strategy

log = logging.getLogger(__name__)

_WHY = "under secure aggregation the server only ever sees the sum of the round's updates"


def check_secagg(cfg: Config) -> None:
    """Refuse settings that secure aggregation cannot serve; messages name both keys."""
    a = cfg.secagg
    if not a.enabled:
        return
    s = cfg.strategy
    if cfg.topology.kind not in ("star", "tree"):
        raise ConfigError(
            f"secagg.enabled = true is wired for topology.kind = 'star' or 'tree' (per edge) "
            f"only, got {cfg.topology.kind!r}"
        )
    _check_rule(cfg)
    if s.name == "scaffold":
        raise ConfigError(
            "secagg.enabled = true cannot be combined with strategy.name = 'scaffold': its "
            "control variates need each client's correction, and " + _WHY
        )
    if cfg.anomaly.enabled:
        raise ConfigError(
            "secagg.enabled = true cannot be combined with anomaly.enabled = true: anomaly "
            "scores need each client's update, and " + _WHY
        )
    if cfg.privacy.adaptive_clipping:
        raise ConfigError(
            "secagg.enabled = true cannot be combined with privacy.adaptive_clipping = true: "
            "adaptive clipping needs each update's norm, and " + _WHY
        )
    _check_graph(cfg, a)


def _check_rule(cfg: Config) -> None:
    """The aggregator must be linear (the weighted mean)."""
    from murmura.aggregate import make_aggregator

    s = cfg.strategy
    if not make_aggregator(s.aggregator, **s.aggregator_args).linear:
        raise ConfigError(
            f"secagg.enabled = true cannot be combined with strategy.aggregator = "
            f"{s.aggregator!r}: {s.aggregator} needs every client's individual update, and "
            f"{_WHY}; use strategy.aggregator = 'weighted_mean' or turn secagg off"
        )


def _check_graph(cfg: Config, a: SecAggSection) -> None:
    """Neighbours even, threshold within the closed neighbourhood, 2+ clients per round."""
    if a.neighbours is not None and a.neighbours % 2 and a.neighbours != cfg.cohort_size() - 1:
        raise ConfigError(
            f"secagg.neighbours must be even (or the cohort size - 1), got {a.neighbours}"
        )
    if a.threshold is not None and a.neighbours is not None and a.threshold > a.neighbours + 1:
        raise ConfigError(
            f"secagg.threshold = {a.threshold} exceeds secagg.neighbours + 1 = {a.neighbours + 1}"
        )
    if cfg.privacy.mode != "central" and cfg.cohort_size() < 2:
        raise ConfigError(
            f"secagg.enabled = true needs at least 2 clients per round, strategy.fraction and "
            f"strategy.min_clients give {cfg.cohort_size()}"
        )


def apply_secagg(cfg: Config, strategy: Strategy, max_client_examples: int) -> Strategy:
    """``strategy`` wrapped in secure aggregation when ``[secagg] enabled``, else unchanged.

    Without ``clip``, the quantisation range is ``privacy.clip_norm`` under central DP (an
    L2-clipped update has no coordinate beyond it), else 1. Without ``max_weight``, the
    largest client's example count (public in simulation; a deployment must fix it).
    """
    a = cfg.secagg
    if not a.enabled:
        return strategy
    # only a secagg run pays for the protocol's imports (cryptography)
    from murmura.privacy.secagg import Stage
    from murmura.strategy.secure import SecAggParams, SecureAggregation

    central = cfg.privacy.mode == "central"
    clip = a.clip if a.clip is not None else (cfg.privacy.clip_norm if central else 1.0)
    params = SecAggParams(
        neighbours=a.neighbours,
        threshold=a.threshold,
        clip=clip,
        max_weight=a.max_weight if a.max_weight is not None else float(max_client_examples),
        rounding=a.rounding,
        dropout={Stage[name.upper()]: f for name, f in a.dropout.items()},
        seed=cfg.run.seed,
        level_bits=_level_bits(cfg),
    )
    log.info("secure aggregation on: clip %.4g, max_weight %s, %s", clip, params.max_weight,
             "fixed point mod 2**32" if params.level_bits is None
             else f"{params.level_bits}-bit levels mod 2**16")  # fmt: skip
    return SecureAggregation(strategy, params)


def _level_bits(cfg: Config) -> int | None:
    """Bits of the quantised ring (``compression.uplink = 'quantize'``; checked at load time)."""
    c = cfg.compression
    return int(c.args.get("bits", 8)) if c.uplink == "quantize" else None
