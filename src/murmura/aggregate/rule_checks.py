"""Load-time checks of the rule settings that not every role honours; those are refused.

``[strategy] pre_aggregation``:
A pre-aggregation needs every update of the round (or every model of a neighbourhood) in the
clear, one row per client. It applies at the star's server, at each tree edge over its
children and at each P2P peer over its neighbourhood; a role that only ever sees a sum
(secure aggregation, central DP's clipped sum) or mixes by another formula (ClippedGossip)
cannot honour it and refuses the config here, naming the section and the role.

A rule with per-client state (FoolsGold's histories, ``ClientAware``) is checkpointed by
FedAvg and FedProx only, and a peer keeps no history of its neighbours: the other strategies
and P2P topologies refuse it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from murmura.aggregate.base import AGGREGATORS, ClientAware
from murmura.aggregate.preaggregation import strategy_rule
from murmura.errors import ConfigError

if TYPE_CHECKING:
    from murmura.config import Config


def check_pre_aggregation(cfg: Config) -> None:
    """Build the rule with its pre-aggregation, and refuse the combinations no role honours."""
    s, t = cfg.strategy, cfg.topology
    rule = strategy_rule(s)
    rule.check(cfg.cohort_size())
    if s.pre_aggregation == "none":
        return
    what = f"strategy.pre_aggregation = {s.pre_aggregation!r}"
    if cfg.secagg.enabled:
        raise ConfigError(
            f"{what} cannot be combined with secagg.enabled = true: the server (or each tree "
            "edge) sees only the masked sum of its clients' updates, never the rows to "
            "pre-aggregate; set strategy.pre_aggregation = 'none' or turn secagg off"
        )
    if cfg.privacy.mode == "central":
        raise ConfigError(
            f"{what} cannot be combined with privacy.mode = 'central': the noise is calibrated "
            "to a plain sum of clipped updates, which a pre-aggregation would change; use "
            "privacy.mode = 'local' or set strategy.pre_aggregation = 'none'"
        )
    if t.kind not in ("star", "tree") and t.robust == "clipped":
        raise ConfigError(
            f"{what} is not applied by a P2P peer with topology.robust = 'clipped': "
            "ClippedGossip clips each neighbour's pull towards the peer's own model, not a "
            "rule over the rows; use topology.robust = 'none' or a rule name (e.g. "
            "'trimmed_mean'), which the peer applies to its pre-aggregated neighbourhood"
        )


STATEFUL_STRATEGIES = ("fedavg", "fedprox")
P2P_HISTORY = (
    "it scores how alike each client's history of updates is to the others', but a peer "
    "mixes its neighbours' models, not their updates (models are alike after gossip, so "
    "every neighbour would score as a sybil), and a neighbour's change between rounds "
    "already mixes in the neighbours it shares with others; use another rule"
)
"""Why a rule with per-client history (FoolsGold) has no meaning in a P2P neighbourhood."""


def check_stateful_rule(cfg: Config) -> None:
    """A rule with per-client state runs only where its state is kept and checkpointed."""
    s, t = cfg.strategy, cfg.topology
    if t.kind not in ("star", "tree") and t.robust in AGGREGATORS:
        if isinstance(AGGREGATORS.get(t.robust)(**t.robust_args), ClientAware):
            raise ConfigError(
                f"topology.robust = {t.robust!r} is not applied by a P2P peer: {P2P_HISTORY}"
            )
    rule = AGGREGATORS.get(s.aggregator)(**s.aggregator_args)
    if isinstance(rule, ClientAware) and s.name not in STATEFUL_STRATEGIES:
        raise ConfigError(
            f"strategy.aggregator = {s.aggregator!r} keeps a history per client that "
            f"strategy.name = {s.name!r} does not checkpoint; use strategy.name = 'fedavg' "
            "or 'fedprox'"
        )
