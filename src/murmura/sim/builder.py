"""Builds a simulation from a validated ``Config``: task, data, clients, strategy.

The top of the simulation layers: it picks the executor (``choose``) and, for a tree or a
peer-to-peer graph, hands over to ``hierarchical`` or ``p2p``. What those and the executors
share with it (``Experiment``, ``federate``, ``server_strategy``) lives below them, in
``murmura.sim.experiment``, so that none of them imports this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from murmura.client import Client, FlatModel, LocalSGD, TorchClient
from murmura.compress.uplink import apply_compression
from murmura.config import Config
from murmura.data.federated import FederatedDataset
from murmura.errors import ConfigError
from murmura.privacy.secure_wiring import apply_secagg
from murmura.privacy.wiring import apply_privacy
from murmura.sim.choose import choose_executor
from murmura.sim.experiment import Experiment, federate, server_strategy
from murmura.sim.runtime import Simulation
from murmura.strategy import Strategy
from murmura.strategy.anomaly import AnomalyMonitor, Flagging
from murmura.tasks import Task, evaluate_classifier, load_task
from murmura.types import EvaluateRes, Vector

__all__ = ["Experiment", "build_experiment", "federate", "server_strategy"]

log = logging.getLogger(__name__)


def build_experiment(cfg: Config) -> Experiment:
    """Materialise the task, partition, clients and strategy that ``cfg`` describes."""
    if cfg.stats.standardise:  # fit the task's scaling from a statistics round, then build
        from murmura.analytics.fit_scaling import fit_simulated

        fitted, stats = fit_simulated(cfg)
        exp = build_experiment(fitted)
        exp.statistics = stats
        return exp
    if cfg.topology.kind == "tree":
        from murmura.sim.hierarchical import build_hierarchical_experiment

        return build_hierarchical_experiment(cfg)
    if cfg.topology.kind != "star":
        from murmura.sim.p2p import build_p2p_experiment

        return build_p2p_experiment(cfg)
    task = load_task(cfg.task.name, **cfg.task.args)
    kind, data = federate(cfg, task)
    if cfg.simulation.threads:
        torch.set_num_threads(cfg.simulation.threads)
    torch.manual_seed(cfg.run.seed)
    model = FlatModel(task.build_model())
    hp = LocalSGD(**cfg.client.model_dump())
    clients = [
        TorchClient(cid, data, task, model, hp, seed=cfg.run.seed)
        for cid in range(data.num_clients)
    ]
    e = cfg.evaluation
    strategy = server_strategy(
        cfg,
        _central_evaluation(cfg, task, data, model) if e.central else None,
        fraction_evaluate=e.fraction if e.federated else 0.0,
    )
    log.info(
        "task %s: %d clients (%s partition), %d parameters",
        task.name,
        data.num_clients,
        kind,
        model.layout.size,
    )
    strategy, private = apply_privacy(cfg, strategy, clients)  # [privacy]; as is when off
    # only when needed: client_size generates a lazy task's client (100,000 of them in W4)
    needs_largest = cfg.secagg.enabled and cfg.secagg.max_weight is None
    largest = max(data.client_size(c) for c in range(data.num_clients)) if needs_largest else 0
    strategy = apply_secagg(cfg, strategy, largest)  # [secagg]; as is when off
    # [compression] encodes what privacy released (local DP noise before encoding)
    wrapped, byzantine = _wrap_clients(cfg, strategy, apply_compression(cfg, private), data)
    strategy = _flagging(cfg, strategy)  # [anomaly]; as is when off
    sim = Simulation(
        strategy,
        wrapped,
        model.get(),
        executor=choose_executor(cfg, model, task, wrapped),
        evaluate_every=cfg.evaluation.every,
        max_weight_share=cfg.strategy.max_weight_share,
    )
    if cfg.clock.enabled:  # [clock]: simulated time, deadlines, FedAsync/FedBuff
        from murmura.simtime.wiring import apply_clock

        sim = apply_clock(cfg, sim)
    return Experiment(cfg, task, data, model, sim, tuple(byzantine))


def _central_evaluation(
    cfg: Config, task: Task, data: FederatedDataset, model: FlatModel
) -> Callable[[Vector], EvaluateRes]:
    """Evaluation of a model on the task's central test set (and a backdoor's success rate)."""
    test_x, test_y = data.test()
    if len(test_x) == 0:
        raise ConfigError(
            "evaluation.central = true but the task has no test set (a files task without "
            "task.args.test): set evaluation.central = false and evaluation.federated = true"
        )

    def evaluate(weights: Vector) -> EvaluateRes:
        model.set(weights)
        return evaluate_classifier(model.module, task, test_x, test_y)

    if cfg.attack.kind == "none":
        return evaluate
    from murmura.attacks.wiring import with_attack_success

    return with_attack_success(cfg, evaluate, model, data)


def _wrap_clients(
    cfg: Config, strategy: Strategy, clients: Sequence[Client], data: FederatedDataset
) -> tuple[list[Client], list[str]]:
    """Per-client strategy state (SCAFFOLD's ``wrap_client``), then the [attack] wrappers.

    Returns the clients and the node ids of those the attack took over.
    """
    wrap = getattr(strategy, "wrap_client", None)
    out: list[Client] = [wrap(c) for c in clients] if callable(wrap) else list(clients)
    if cfg.attack.kind == "none":
        return out, []
    from murmura.attacks.wiring import wrap_attackers

    return wrap_attackers(cfg, out, cfg.cohort_size(), data)


def _flagging(cfg: Config, strategy: Strategy) -> Strategy:
    """``strategy`` under the [anomaly] monitor, if enabled (so a deployed coordinator too)."""
    a = cfg.anomaly
    if not a.enabled:
        return strategy
    return Flagging(strategy, AnomalyMonitor(a.score, a.threshold, a.rounds, a.exclude))
