"""Load-time checks of ``[privacy]``, and the budget arithmetic they share with the wiring.

``murmura.config`` runs ``check_privacy`` when it loads a file, so this module imports no
builder (no torch) and takes the config only as a type: the layers stay config -> checks ->
wiring, without a cycle. ``murmura.privacy.wiring`` turns a checked config into objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from murmura.errors import ConfigError
from murmura.privacy.accountant import create_accountant
from murmura.privacy.adaptive_clipping import delta_noise_multiplier
from murmura.privacy.budget import PrivacyBudget

if TYPE_CHECKING:
    from murmura.config import Config, PrivacySection


def privacy_error(key: str, message: str) -> ConfigError:
    """A ConfigError that names the ``[privacy]`` key."""
    return ConfigError(f"privacy.{key}: {message}")


def client_sample_rate(cfg: Config) -> float:
    """Probability that a client releases in a round: ``fraction`` (central), 1 (local)."""
    return cfg.strategy.fraction if cfg.privacy.mode == "central" else 1.0


def count_noise_std(p: PrivacySection, expected_cohort: float, z: float) -> float:
    """Std of the noised clip count: the configured one, else Andrew et al.'s ``qN / 20``."""
    if z == 0:
        return 0.0
    return p.clip_count_stddev if p.clip_count_stddev is not None else expected_cohort / 20.0


def check_privacy(cfg: Config) -> None:
    """Combinations that cannot work, refused before training with the key to change."""
    p = cfg.privacy
    if p.adaptive_clipping and p.mode != "central":
        raise privacy_error("adaptive_clipping", f"needs mode = 'central', got {p.mode!r}")
    if p.weight_cap is not None and p.mode != "central":
        raise privacy_error("weight_cap", f"needs mode = 'central', got {p.mode!r}")
    if p.mode == "none" and not p.dp_sgd:
        return
    kind = cfg.topology.kind
    if p.mode == "central" and kind not in ("star", "tree"):
        raise privacy_error(
            "mode",
            f"'central' needs a trusted aggregator to add the noise; topology.kind = {kind!r} "
            "is peer-to-peer, where neighbours are not trusted: use mode = 'local' "
            "(each peer noises what it shares) or dp_sgd = true",
        )
    if p.mode == "central" and kind == "tree" and cfg.secagg.enabled:
        raise privacy_error(
            "mode",
            "'central' in a tree trusts each edge with its clients' clipped updates, so "
            "per-edge secure aggregation is not wired with it: set secagg.enabled = false, "
            "or use topology.kind = 'star' for central DP with secure aggregation",
        )
    if p.mode != "none" and p.noise_multiplier is None and p.target_epsilon is None:
        raise privacy_error("noise_multiplier", "set it, or set target_epsilon to plan it")
    if p.dp_sgd and cfg.strategy.name == "scaffold" and kind in ("star", "tree"):
        raise privacy_error("dp_sgd", "SCAFFOLD's corrected local steps are not DP-SGD steps")
    if p.mode == "central":
        from murmura.aggregate import make_aggregator
        from murmura.strategy import STRATEGIES
        from murmura.strategy.dp import check_linear

        s = cfg.strategy
        inner = STRATEGIES.get(s.name)(
            fraction=s.fraction, aggregator=make_aggregator(s.aggregator, **s.aggregator_args)
        )
        try:
            check_linear(inner, "central DP")
        except ConfigError as exc:
            raise privacy_error("mode", str(exc)) from None
    if p.mode != "none" and p.noise_multiplier is not None:
        client_budget(cfg, p.noise_multiplier)  # refuses a target one round would spend
        if p.adaptive_clipping:
            update_noise(cfg, p.noise_multiplier)


def client_budget(cfg: Config, z: float) -> PrivacyBudget:
    """The client-level budget: one Gaussian step ``(z, client_sample_rate)`` per round."""
    p = cfg.privacy
    try:
        return PrivacyBudget(
            create_accountant(p.accountant),
            noise_multiplier=z,
            sample_rate=client_sample_rate(cfg),
            delta=p.delta,
            target_epsilon=p.target_epsilon,
        )
    except ConfigError as exc:
        raise privacy_error("target_epsilon", str(exc)) from None


def update_noise(cfg: Config, z: float) -> tuple[float, float]:
    """(update noise multiplier, count noise std) so that a round still costs ``z``."""
    expected = cfg.strategy.fraction * cfg.partition.num_clients
    count_std = count_noise_std(cfg.privacy, expected, z)
    if z == 0:
        return 0.0, 0.0
    try:
        return delta_noise_multiplier(z, count_std), count_std
    except ConfigError as exc:
        raise privacy_error("clip_count_stddev", str(exc)) from None
