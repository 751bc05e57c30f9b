"""What every simulated topology builds: the ``Experiment``, its data and its server strategy.

Shared by the star builder (``murmura.sim.builder``), the tree and peer-to-peer builders and
the process-pool workers (which rebuild a client's data exactly as the builder split it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from murmura.aggregate.preaggregation import strategy_rule
from murmura.client import FlatModel
from murmura.config import Config
from murmura.data.federated import FederatedDataset
from murmura.data.holdout import hold_out
from murmura.strategy import STRATEGIES, Strategy
from murmura.strategy.steps import with_step_normalisation
from murmura.tasks import Task
from murmura.types import EvaluateRes, Vector

if TYPE_CHECKING:
    from murmura.analytics.result import FederatedStats
    from murmura.sim.p2p import P2PSimulation
    from murmura.sim.runtime import Simulation


@dataclass(slots=True)
class Experiment:
    """Everything a simulated run needs, built from one config."""

    config: Config
    task: Task
    data: FederatedDataset
    model: FlatModel
    simulation: Simulation | P2PSimulation
    byzantine: tuple[str, ...] = ()
    """Node ids of the clients that ``[attack]`` made Byzantine (simulation ground truth)."""
    statistics: FederatedStats | None = None
    """The statistics ``[stats] standardise`` fitted the task's scaling from (raw rows)."""


def server_strategy(
    cfg: Config,
    evaluate_fn: Callable[[Vector], EvaluateRes] | None,
    *,
    fraction_evaluate: float = 0.0,
) -> Strategy:
    """The ``[strategy]`` that ``cfg`` names, with its server optimiser's parameters."""
    s = cfg.strategy
    strategy: Strategy = STRATEGIES.get(s.name)(
        fraction=s.fraction,
        min_clients=s.min_clients,
        aggregator=strategy_rule(s),
        server_lr=s.server_lr,
        seed=cfg.run.seed,
        evaluate_fn=evaluate_fn,
        fraction_evaluate=fraction_evaluate,
        min_evaluate_clients=cfg.evaluation.min_clients,
        server_momentum=s.server_momentum,
        beta1=s.beta1,
        beta2=s.beta2,
        tau=s.tau,
    )
    return with_step_normalisation(strategy, s.normalize_steps, s.max_weight_share)


def federate(cfg: Config, task: Task) -> tuple[str, FederatedDataset]:
    """The partitioner's name and the clients' data, with ``[evaluation]``'s local hold-out."""
    kind = str(cfg.partition.kind or getattr(task, "default_partitioner", "iid"))
    data = task.federate(
        cfg.partition.num_clients, kind, cfg.partition.args(kind), seed=cfg.run.seed
    )
    return kind, hold_out(data, cfg.evaluation.held_out(), cfg.run.seed)
