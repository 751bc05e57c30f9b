"""``[attack]`` turned into attacking clients and, for a backdoor, the success-rate metric.

Shared by the star and the tree builders so that both run the same attackers, chosen by the
same seed, and report the same ``attack_success_rate`` next to the test accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from murmura.attacks.backdoor import attack_success_rate, backdoor_target
from murmura.attacks.base import AttackContext
from murmura.attacks.clients import wrap_byzantine
from murmura.client import Client, FlatModel
from murmura.data.federated import FederatedDataset
from murmura.types import EvaluateRes, Vector

if TYPE_CHECKING:  # the config reads attacks lazily; a type here, not an import cycle
    from murmura.config import Config

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
    a, s = cfg.attack, cfg.strategy
    if a.kind == "none":
        return list(clients), []
    ctx = AttackContext(
        num_clients=len(clients),
        cohort_size=cohort_size,
        server_lr=s.server_lr,
        seed=cfg.run.seed,
        aggregator=s.aggregator,
        aggregator_args=dict(s.aggregator_args),
        pre_aggregation=s.pre_aggregation,
        pre_aggregation_args=dict(s.pre_aggregation_args),
        num_classes=num_classes_of(data),
    )
    return wrap_byzantine(clients, a.kind, a.fraction, a.args, ctx)


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
