"""What each deployed role does not apply yet: refused at load time, naming the section and role.

A run config is shared by the simulation and the deployment. A deployed role that accepted a
setting it does not apply would run without it and say nothing: a peer training without its
``[privacy]``, an edge running plain FedAvg under central DP, a coordinator that never scores
an update for ``[anomaly]``. Each role's builder calls ``check_role`` before any data is
loaded; a limit goes away when its role honours the setting (the simulation already does).

Accepted because they work: central DP and ``[secagg]`` at ``murmura server`` (the
coordinator runs them), local DP and DP-SGD at ``murmura edge`` (they are the clients' part)
and at ``murmura peer`` (it builds the simulation's privatised learners and budgets),
and the server-side sections (central DP, ``[secagg]``, ``[anomaly]``) at ``murmura client
--config``, which reads only the task, partition, seed and hold-out from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from murmura.config import Config
from murmura.errors import ConfigError

Role = Literal["server", "client", "edge", "peer"]

COMMANDS: dict[Role, str] = {
    "server": "murmura server (the deployed coordinator)",
    "client": "murmura client --config (a deployed worker)",
    "edge": "murmura edge (a deployed edge aggregator)",
    "peer": "murmura peer (a deployed P2P peer)",
}


@dataclass(frozen=True, slots=True)
class Limit:
    """A setting a role does not apply: when ``applies`` to a config, it is refused."""

    setting: str
    applies: Callable[[Config], bool]
    why: str


def _local_dp(cfg: Config) -> bool:
    return cfg.privacy.mode == "local"


def _dp_sgd(cfg: Config) -> bool:
    return cfg.privacy.dp_sgd


def _central_dp(cfg: Config) -> bool:
    return cfg.privacy.mode == "central"


def _secagg(cfg: Config) -> bool:
    return cfg.secagg.enabled


def _anomaly(cfg: Config) -> bool:
    return cfg.anomaly.enabled


def _attack(cfg: Config) -> bool:
    return cfg.attack.kind != "none"


def _stats(cfg: Config) -> bool:
    return cfg.stats.enabled


def _secure_stats(cfg: Config) -> bool:
    return cfg.stats.enabled and cfg.stats.secure_aggregation


_STATS = Limit(
    "[stats] enabled = true",
    _stats,
    "only the star's coordinator (`murmura server`) runs a statistics phase; set "
    "stats.enabled = false here, or run `murmura stats` on the config in simulation",
)
_TRACKING = Limit(
    "[tracking] mlflow = true",
    lambda cfg: cfg.tracking.mlflow,
    "only `murmura run` and the star's coordinator (`murmura server`) log to MLflow; set "
    "tracking.mlflow = false here",
)
_ATTACK = Limit(
    "[attack] kind != 'none'",
    _attack,
    "attacks wrap simulated clients and no deployed node reads [attack], so nothing would "
    "attack; set attack.kind = 'none' (red-team a deployed peer with `murmura peer --attack`)",
)
_NO_WORKER_DP = (
    "`murmura client` does not clip and noise its updates yet, so the server would report an "
    "epsilon that no worker spends; use privacy.mode = 'central' (the coordinator adds the "
    "noise) or run it in simulation"
)
_NO_WORKER_DP_SGD = (
    "`murmura client` does not train with DP-SGD yet, so the reported sample_epsilon would "
    "be spent by no worker; set privacy.dp_sgd = false or run it in simulation"
)

LIMITS: dict[Role, tuple[Limit, ...]] = {
    "server": (
        Limit("[privacy] mode = 'local'", _local_dp, _NO_WORKER_DP),
        Limit("[privacy] dp_sgd = true", _dp_sgd, _NO_WORKER_DP_SGD),
        Limit(
            "[anomaly] enabled = true",
            _anomaly,
            "the deployed coordinator does not score updates yet, so no node would be flagged "
            "or excluded; set anomaly.enabled = false or run it in simulation",
        ),
        Limit(
            "[stats] secure_aggregation = true",
            _secure_stats,
            "the deployed statistics phase sums the sites' answers in the clear (SecAgg+ of "
            "statistics runs in simulation only, `murmura stats`); set "
            "stats.secure_aggregation = false",
        ),
        _ATTACK,
    ),
    "client": (
        Limit(
            "[privacy] mode = 'local'",
            _local_dp,
            "this worker does not clip and noise its updates yet and would send them in the "
            "clear; use privacy.mode = 'central' or run it in simulation",
        ),
        Limit(
            "[privacy] dp_sgd = true",
            _dp_sgd,
            "this worker does not train with DP-SGD yet and would train without it; set "
            "privacy.dp_sgd = false or run it in simulation",
        ),
        _ATTACK,
    ),
    "edge": (
        Limit(
            "[privacy] mode = 'central'",
            _central_dp,
            "a deployed edge averages its children with plain [strategy] instead of summing "
            "their clipped updates for the root's noise, so no release would be private; run "
            "central DP in a star (`murmura server`) or in simulation",
        ),
        Limit(
            "[secagg] enabled = true",
            _secagg,
            "a deployed edge aggregates its children's updates in the clear; set "
            "secagg.enabled = false or run per-edge secure aggregation in simulation",
        ),
        Limit(
            "[anomaly] enabled = true",
            _anomaly,
            "a deployed edge does not score its children's updates; set anomaly.enabled = false",
        ),
        _STATS,
        _TRACKING,
        _ATTACK,
    ),
    "peer": (
        Limit(
            "[anomaly] enabled = true",
            _anomaly,
            "peers do not score their neighbours' models; set anomaly.enabled = false (robust "
            "mixing is [topology] robust)",
        ),
        _STATS,
        _TRACKING,
        _ATTACK,
    ),
}


def check_role(role: Role, cfg: Config) -> None:
    """Raise ``ConfigError`` for the first setting of ``cfg`` that ``role`` does not apply."""
    for limit in LIMITS[role]:
        if limit.applies(cfg):
            raise ConfigError(f"{limit.setting} is not applied by {COMMANDS[role]}: {limit.why}")
