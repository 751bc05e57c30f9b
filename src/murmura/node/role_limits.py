"""What each deployed role does not apply yet: refused at load time, naming the section and role.

A run config is shared by the simulation and the deployment. A deployed role that accepted a
setting it does not apply would run without it and say nothing: a peer training without its
``[privacy]``, an edge running plain FedAvg under central DP or never scoring an update for
``[anomaly]``. Each role's builder calls ``check_role`` before any data is
loaded; a limit goes away when its role honours the setting (the simulation already does).

Accepted because they work: central DP, ``[secagg]`` and ``[anomaly]`` at ``murmura server`` (it
runs the strategy wrappers the simulation builds); ``[clock] mode = 'async'`` at ``murmura server``
(``murmura.node.async_coordinator``, in real time) and ``murmura client``; central DP (``EdgeSum``
over the edge's allowlisted clients) and per-edge ``[secagg]`` at ``murmura edge``; ``[attack]`` at
``murmura client --config`` (the worker the simulation's choice picks attacks), at ``murmura
server`` and ``murmura edge`` (they aggregate what the attackers send), omniscient kinds refused by
all three; local DP and DP-SGD at ``murmura client --config`` (it wraps its learner as the
simulation wraps client ``i``), at ``murmura server`` (it spends the same budgets), at ``murmura
edge`` (they are the clients' part) and at ``murmura peer`` (it builds the simulation's privatised
learners and budgets); ``[compression] downlink`` at ``murmura server``, ``murmura client
--config`` and ``murmura edge`` (``murmura.node.downlink``); CHOCO-gossip (``[compression] uplink``
in P2P) at ``murmura peer`` (``murmura.compress.choco.PeerCopies``); the server-side sections
(central DP, ``[secagg]``, ``[anomaly]``) at ``murmura client --config``, which reads only the
task, partition, seed, hold-out and ``[privacy]``'s client part from it; ``[compression] uplink
= 'quantize'`` with ``[secagg]`` wherever ``[secagg]`` runs (the coordinator or edge puts the
level width in ``SecAggSetup``, the worker masks as told).
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
_ATTACK_FILES = Limit(
    "[attack] with partition.kind = 'files'",
    lambda cfg: _attack(cfg) and cfg.partition.kind == "files",
    "the sites of a files job (`murmura client --site`) are not the run's numbered clients, so "
    "[attack] could choose none of them; set attack.kind = 'none'",
)
_ATTACK_UPLINK = Limit(
    "[attack] with [compression] uplink != 'none'",
    lambda cfg: _attack(cfg) and cfg.compression.uplink != "none",
    "the simulated attacker corrupts its decoded compressed update, a worker would compress "
    "the corrupted one; set compression.uplink = 'none' or run the attack in simulation",
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

SIMULATED_TIME = (
    "speed", "per_sample_s", "sigma", "per_sample", "availability", "period_s", "on_fraction",
    "trace", "up_bps", "down_bps",
)  # fmt: skip
"""The ``[clock]`` keys that describe simulated clients, not the asynchronous rule."""


def _simulated_clock(cfg: Config) -> bool:
    c = cfg.clock
    if not c.enabled or c.mode == "sync":
        return c.enabled
    fields = type(c).model_fields  # a key counts as given when it differs from its default
    return any(
        getattr(c, k) != fields[k].get_default(call_default_factory=True) for k in SIMULATED_TIME
    )


_SIMULATED_CLOCK = Limit(
    "[clock] enabled = true with mode = 'sync' or a simulated client's speed, availability "
    "or bandwidth",
    _simulated_clock,
    "deployed nodes run in real time: `murmura server` runs clock.mode = 'async' (algorithm, "
    "concurrency, buffer_size, mixing, staleness, a, b, max_staleness), but the simulated "
    "clock's speeds, availability, bandwidths and synchronous deadlines run in simulation "
    "only; leave those keys out, or set clock.enabled = false",
)
_ASYNC_DOWNLINK = Limit(
    "[compression] downlink != 'none' with [clock] mode = 'async'",
    lambda cfg: cfg.compression.downlink != "none" and cfg.clock.enabled
    and cfg.clock.mode == "async",
    "the asynchronous coordinator hands out the float32 model (a compressed downlink is "
    "built per synchronous round); set compression.downlink = 'none'",
)
_ASYNC_FEDERATED_EVAL = Limit(
    "[evaluation] federated = true with [clock] mode = 'async'",
    lambda cfg: cfg.clock.enabled and cfg.clock.mode == "async" and cfg.evaluation.federated,
    "in async mode the workers are training on their own models while an aggregation is "
    "evaluated, so a federated evaluation would wait for the slowest; set "
    "evaluation.federated = false (the coordinator's test set still evaluates)",
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
        _ATTACK_FILES,
        _DOWNLINK,
        _SIMULATED_CLOCK,
        _ASYNC_FEDERATED_EVAL,
        _ASYNC_DOWNLINK,
    ),
    "client": (_STANDARDISE, _ATTACK_FILES, _ATTACK_UPLINK, _SIMULATED_CLOCK),
    "edge": (
        Limit(
            "[anomaly] enabled = true",
            _anomaly,
            "a deployed edge does not score its children's updates; set anomaly.enabled = false",
        ),
        _STATS,
        _TRACKING,
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
