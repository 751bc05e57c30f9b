"""``[attack]`` turned into attacking clients and, for a backdoor, the success-rate metric.

Shared by the star and the tree builders so that both run the same attackers, chosen by the
same seed, and report the same ``attack_success_rate`` next to the test accuracy; and by a
deployed worker (``murmura client --config``), which turns itself into the same attacker
when the same choice picks its client index.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from murmura.attacks.backdoor import attack_success_rate, backdoor_target
from murmura.attacks.base import AttackContext, OmniscientAttack, choose_byzantine, make_attack
from murmura.attacks.breakdown import round_size
from murmura.attacks.clients import attack_client, attacker_attack, wrap_byzantine
from murmura.client import Client, FlatModel
from murmura.data.federated import FederatedDataset
from murmura.errors import ConfigError
from murmura.types import EvaluateRes, Vector

if TYPE_CHECKING:  # the config reads attacks lazily; a type here, not an import cycle
    from murmura.config import Config

log = logging.getLogger(__name__)

EvaluateFn = Callable[[Vector], EvaluateRes]


def num_classes_of(data: FederatedDataset) -> int:
    """Classes of a classification task: the largest test label plus one."""
    return int(torch.max(data.test()[1])) + 1


def wrap_attackers(
    cfg: Config, clients: Sequence[Client], cohort_size: int, data: FederatedDataset
) -> tuple[list[Client], list[str]]:
    """``clients`` with ``[attack]``'s attackers; their node ids (none when ``kind = "none"``).

    ``cohort_size`` is the size of a round where the attackers send (a tree: an edge's).
    """
    a = cfg.attack
    if a.kind == "none":
        return list(clients), []
    ctx = attack_context(cfg, len(clients), cohort_size, data)
    return wrap_byzantine(clients, a.kind, a.fraction, a.args, ctx)


def attack_context(
    cfg: Config, num_clients: int, cohort_size: int, data: FederatedDataset
) -> AttackContext:
    """What ``[attack]``'s attack may know of the run: its rule, size, seed and classes."""
    s = cfg.strategy
    return AttackContext(
        num_clients=num_clients,
        cohort_size=cohort_size,
        server_lr=s.server_lr,
        seed=cfg.run.seed,
        aggregator=s.aggregator,
        aggregator_args=dict(s.aggregator_args),
        pre_aggregation=s.pre_aggregation,
        pre_aggregation_args=dict(s.pre_aggregation_args),
        num_classes=num_classes_of(data),
    )


def deployed_attack(cfg: Config, data: FederatedDataset, command: str) -> AttackContext | None:
    """``[attack]``'s context for a deployed role; refuses what a deployment cannot run.

    An omniscient attack (``OmniscientAttack``) forges its update from the round's honest
    ones, which the simulated round loop hands it; a deployed worker never sees them and
    would send its honest update, so it is refused with the reason. None: no attack.
    """
    a = cfg.attack
    if a.kind == "none":
        return None
    ctx = attack_context(cfg, cfg.partition.num_clients, round_size(cfg), data)
    if isinstance(make_attack(a.kind, ctx, a.args), OmniscientAttack):
        raise ConfigError(
            f"[attack] kind = {a.kind!r} is not applied by {command}: an omniscient attack "
            "forges its update from the round's honest updates, which only the simulated "
            "round loop hands it; run it in simulation, or pick an update or data attack"
        )
    return ctx


def attacking_learner(cfg: Config, learner: Client, index: int, data: FederatedDataset) -> Client:
    """Deployed worker ``index``'s learner as ``[attack]`` makes it (``murmura client``).

    The simulation's rule: the same seeded choice of attackers over the run's clients
    (worker ``i`` is client ``i``), the same attack object and client wrapper
    (``attack_client``), around the learner after its privacy, as in the star and tree.
    """
    a = cfg.attack
    ctx = deployed_attack(cfg, data, "murmura client --config (a deployed worker)")
    if ctx is None:
        return learner
    chosen = choose_byzantine(ctx.num_clients, a.fraction, ctx.seed)
    attack = attacker_attack(a.kind, a.args, ctx, chosen, index)
    if attack is None:
        return learner
    log.warning(
        "node=%s: BYZANTINE WORKER: [attack] kind = %s chose client %d of %d; this worker "
        "sends what the attack makes of its training",
        learner.node_id, a.kind, index, ctx.num_clients,
    )  # fmt: skip
    return attack_client(learner, attack)


def with_attack_success(
    cfg: Config, evaluate: EvaluateFn, model: FlatModel, data: FederatedDataset
) -> EvaluateFn:
    """``evaluate``, plus ``attack_success_rate`` on the triggered test set for a backdoor."""
    planted = backdoor_target(cfg.attack.kind, dict(cfg.attack.args))
    if planted is None:
        return evaluate
    trigger, target = planted
    x, y = data.test()

    def evaluate_with_asr(weights: Vector) -> EvaluateRes:
        res = evaluate(weights)
        model.set(np.asarray(weights, dtype=np.float32))
        model.module.eval()
        asr = attack_success_rate(model.module, x, y, trigger, target)
        model.module.train()
        return EvaluateRes(res.loss, res.num_examples, {**res.metrics, "attack_success_rate": asr})

    return evaluate_with_asr
