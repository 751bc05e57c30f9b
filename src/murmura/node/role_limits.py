"""What each deployed role does not apply yet: refused at load time, naming the section and role.

A run config is shared by the simulation and the deployment. A deployed role that accepted a
setting it does not apply would run without it and say nothing: a peer training without its
``[privacy]``, an edge running plain FedAvg under central DP or never scoring an update for
``[anomaly]``. Each role's builder calls ``check_role`` before any data is
loaded; a limit goes away when its role honours the setting (the simulation already does).

Accepted because they work: central DP, ``[secagg]`` and ``[anomaly]`` at ``murmura server``
(it runs the strategy wrappers the simulation builds); local DP and DP-SGD at ``murmura
client --config`` (it wraps its learner as the simulation wraps client ``i``), at ``murmura
server`` (it spends the same budgets), at ``murmura edge`` (they are the clients' part) and at
``murmura peer`` (it builds the simulation's privatised learners and budgets); ``[compression]
downlink`` at ``murmura server``, ``murmura client --config`` and ``murmura edge``
(``murmura.node.downlink``); CHOCO-gossip
(``[compression] uplink`` in P2P) at ``murmura peer`` (``murmura.compress.choco.PeerCopies``); the
server-side sections (central DP, ``[secagg]``, ``[anomaly]``) at ``murmura client
--config``, which reads only the task, partition, seed, hold-out and ``[privacy]``'s client
part from it.
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
_DOWNLINK = Limit(
    "[compression] downlink != 'none' with [secagg] enabled = true",
    lambda cfg: cfg.compression.downlink != "none" and cfg.secagg.enabled,
    "the deployed secure rounds send every client the float32 model; set "
    "compression.downlink = 'none' or run it in simulation",
)
_CLOCK = Limit(
    "[clock] enabled = true",
    lambda cfg: cfg.clock.enabled,
    "deployed nodes run in real time: the simulated clock (speeds, availability, deadlines, "
    "over-selection and async mode with FedAsync/FedBuff) runs in simulation only; set "
    "clock.enabled = false",
)

_STANDARDISE = Limit(
    "[stats] standardise = true",
    lambda cfg: cfg.stats.standardise and cfg.partition.kind != "files",
    "deployed, the federation's scaling is applied by the sites of a files job (`murmura "
    "client --site`); set partition.kind = 'files', or stats.standardise = false",
)

LIMITS: dict[Role, tuple[Limit, ...]] = {
    "server": (
        Limit(
            "[stats] secure_aggregation = true",
            _secure_stats,
            "the deployed statistics phase sums the sites' answers in the clear (SecAgg+ of "
            "statistics runs in simulation only, `murmura stats`); set "
            "stats.secure_aggregation = false",
        ),
        _STANDARDISE,
        _ATTACK,
        _DOWNLINK,
        _CLOCK,
    ),
    "client": (_STANDARDISE, _ATTACK, _CLOCK),
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
        _CLOCK,
    ),
    # [anomaly] and [attack] are refused for every peer-to-peer run when the config loads
    # [clock] needs a star: a peer-to-peer config with it is refused when it loads
    "peer": (_STATS, _TRACKING),
}


def check_role(role: Role, cfg: Config) -> None:
    """Raise ``ConfigError`` for the first setting of ``cfg`` that ``role`` does not apply."""
    for limit in LIMITS[role]:
        if limit.applies(cfg):
            raise ConfigError(f"{limit.setting} is not applied by {COMMANDS[role]}: {limit.why}")
