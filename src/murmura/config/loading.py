"""Reading, overriding and validating config files.

Errors name the file, the key and what is allowed, and are raised before any training.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from murmura.config.run import Config
from murmura.config.security import AttackSection, PrivacySection
from murmura.errors import ConfigError, MurmuraError

log = logging.getLogger(__name__)


def _allowed(model: type[BaseModel], loc: tuple[str | int, ...]) -> str:
    """The keys allowed at the table that holds ``loc``."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return ""
        model = ann
    return ", ".join(model.model_fields)


def _explain(source: str, err: ValidationError) -> ConfigError:
    """One ConfigError listing every problem with its key."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "value_error":  # our own message names its keys: no pydantic prefix
            msg = msg.removeprefix("Value error, ")
        if not key:  # a check across tables: its message names them
            lines.append(f"{source}: {msg}")
            continue
        if e["type"] == "extra_forbidden":
            msg = f"unknown key; allowed keys here: {_allowed(Config, e['loc'])}"
        elif e["type"] != "value_error":
            msg = f"{msg} (got {e.get('input')!r})"
        lines.append(f"{source}: key '{key}': {msg}")
    return ConfigError("\n".join(lines))


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=1"`` -> (["a", "b"], 1); the value is read as TOML, else taken as a string."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. run.rounds=5")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``KEY=VALUE`` override set."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a table")
            node[part] = nxt = dict(nxt)
            node = nxt
        node[path[-1]] = value
    return out


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a config mapping, checking plug-in names and rule preconditions too."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise _explain(source, err) from None
    _check_plugins(cfg, source)
    _warn_breakdown(cfg, source)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a TOML config file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return config_from_dict(apply_overrides(data, overrides or []), str(path))


def _check_plugins(cfg: Config, source: str) -> None:
    """Names exist in their registries and the aggregator accepts the cohort size."""
    from murmura.aggregate import AGGREGATORS
    from murmura.strategy import STRATEGIES
    from murmura.tasks import TASKS

    s = cfg.strategy
    task = cfg.task.name
    checks: list[tuple[str, Callable[[], object]]] = [
        # names only, against the registries' keys: no strategy or task module is imported
        ("task.name", lambda: None if ":" in task else TASKS.check(task)),
        ("strategy.name", lambda: STRATEGIES.check(s.name)),
        ("strategy.aggregator", lambda: AGGREGATORS.get(s.aggregator)),
        (
            "strategy.aggregator_args",
            lambda: AGGREGATORS.get(s.aggregator)(**s.aggregator_args).check(cfg.cohort_size()),
        ),
        ("strategy.pre_aggregation", lambda: _check_pre_aggregation(cfg)),
        ("strategy.aggregator", lambda: _check_stateful_rule(cfg)),
        ("attack", lambda: _check_attack(cfg.attack)),
        ("privacy", lambda: _check_privacy(cfg)),
        ("secagg", lambda: _check_secagg(cfg)),
        ("strategy.max_weight_share", lambda: _check_weight_share(cfg)),
        ("strategy.normalize_steps", lambda: _check_normalize_steps(cfg)),
        ("attack", lambda: _check_not_p2p(cfg, "attack", cfg.attack.kind != "none")),
        ("anomaly", lambda: _check_star_only(cfg, "anomaly", cfg.anomaly.enabled)),
        ("strategy", lambda: _check_peer_strategy(cfg)),
        ("tracking.mlflow", lambda: _check_tracking(cfg)),
    ]
    for key, check in checks:
        try:
            check()
        except (MurmuraError, TypeError) as exc:
            raise ConfigError(f"{source}: key '{key}': {exc}") from None


def _warn_breakdown(cfg: Config, source: str) -> None:
    """Warn when ``[attack] fraction`` is beyond what the aggregator tolerates (allowed)."""
    if cfg.attack.kind != "none":
        from murmura.attacks.breakdown import breakdown_warning

        why = breakdown_warning(cfg)
        if why is not None:
            log.warning("%s: %s", source, why)


def _check_pre_aggregation(cfg: Config) -> None:
    """The pre-aggregation is registered, fits the rule and every role that aggregates."""
    from murmura.aggregate.rule_checks import check_pre_aggregation

    check_pre_aggregation(cfg)


def _check_stateful_rule(cfg: Config) -> None:
    """A rule with per-client state (FoolsGold) only where it is kept and checkpointed."""
    from murmura.aggregate.rule_checks import check_stateful_rule

    check_stateful_rule(cfg)


def _check_attack(attack: AttackSection) -> None:
    """The attack is registered and takes its arguments."""
    if attack.kind != "none":
        from murmura.attacks import check_attack

        check_attack(attack.kind, attack.args)


def _check_privacy(cfg: Config) -> None:
    """The [privacy] settings fit together and with the strategy (messages name the key)."""
    if cfg.privacy != PrivacySection():
        from murmura.privacy.checks import check_privacy

        check_privacy(cfg)


def _check_secagg(cfg: Config) -> None:
    """[secagg] fits the strategy, aggregator, anomaly and privacy settings."""
    if cfg.secagg.enabled:
        from murmura.privacy.secure_wiring import check_secagg

        check_secagg(cfg)


def _check_weight_share(cfg: Config) -> None:
    """``max_weight_share`` only where an aggregator sees every update's example count."""
    if cfg.strategy.max_weight_share is None:
        return
    kind = cfg.topology.kind
    if kind not in ("star", "tree"):
        raise ConfigError(
            f"topology.kind = {kind!r} is peer-to-peer: peers mix their neighbours' models "
            "with graph weights, no example counts, so there is no share to cap; unset it"
        )
    if cfg.secagg.enabled:
        raise ConfigError(
            "cannot be combined with secagg.enabled = true: the server only ever sees the "
            "sum of the round's updates and weights, never one client's weight to cap; use "
            "secagg.max_weight (an absolute bound each client's weight is checked against)"
        )
    if kind == "tree" and cfg.privacy.mode == "central":
        raise ConfigError(
            "cannot be combined with privacy.mode = 'central' in a tree: each edge sums its "
            "clients' clipped updates, and a share of the round's total needs every client's "
            "count, which no edge has; use privacy.weight_cap (a client weighs at most 1)"
        )


def _check_normalize_steps(cfg: Config) -> None:
    """FedNova's normalisation only where an aggregator sees every update and its step count."""
    if cfg.strategy.normalize_steps:
        from murmura.strategy.steps import check_normalize_steps

        check_normalize_steps(cfg)


def _check_not_p2p(cfg: Config, section: str, on: bool) -> None:
    """[attack] wraps a star's or a tree's clients; peers would ignore it."""
    if on and cfg.topology.kind not in ("star", "tree"):
        raise ConfigError(
            f"[{section}] wraps a star's or a tree's clients; topology.kind = "
            f"{cfg.topology.kind!r} would ignore it (a peer-to-peer run's Byzantine peers are "
            "topology.byzantine_*); unset it"
        )


def _check_star_only(cfg: Config, section: str, on: bool) -> None:
    """[anomaly] scores a star server's updates; a tree or peers would ignore it."""
    if on and cfg.topology.kind != "star":
        raise ConfigError(
            f"[{section}] scores the updates a star's server receives; topology.kind = "
            f"{cfg.topology.kind!r} would ignore it (robust rules are strategy.aggregator per "
            "edge, or topology.robust for peers); unset it"
        )


def _check_peer_strategy(cfg: Config) -> None:
    """Peers mix models by graph weights: no server strategy, optimiser or aggregator."""
    s = cfg.strategy
    if cfg.topology.kind in ("star", "tree"):
        return
    if s.name != "fedavg" or s.aggregator != "weighted_mean":
        raise ConfigError(
            f"topology.kind = {cfg.topology.kind!r} is peer-to-peer: peers mix their "
            f"neighbours' models, with no server strategy or aggregator, so strategy.name = "
            f"{s.name!r} and strategy.aggregator = {s.aggregator!r} would be ignored; leave "
            "them unset (a robust mix is topology.robust)"
        )


def _check_tracking(cfg: Config) -> None:
    """MLflow is installed when tracking is on (it is the ``murmura[mlflow]`` extra)."""
    if cfg.tracking.mlflow:
        from murmura.ops.tracking import require_mlflow

        require_mlflow()
