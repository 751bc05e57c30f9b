"""Builds a simulation from a validated ``Config``: the roles' parts, run in one process.

The top of the simulation layers. The server's strategy and its clients' learners come from
the composition root (``murmura.compose``, shared with the deployed roles); this module adds
what only a simulation has: the executor (``choose``) and the simulated clock. A tree or a
peer-to-peer graph is built by ``hierarchical`` or ``p2p``, as ``murmura.compose.kinds`` says.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from murmura.compose.kinds import topology_kind
from murmura.compose.server import star_server
from murmura.config import Config
from murmura.registry import resolve
from murmura.sim.choose import choose_executor
from murmura.sim.experiment import Experiment
from murmura.sim.runtime import Simulation

__all__ = ["Experiment", "build_experiment"]

log = logging.getLogger(__name__)


def build_experiment(cfg: Config) -> Experiment:
    """Materialise the task, partition, clients and strategy that ``cfg`` describes."""
    if cfg.stats.standardise:  # fit the task's scaling from a statistics round, then build
        from murmura.analytics.fit_scaling import fit_simulated

        fitted, stats = fit_simulated(cfg)
        exp = build_experiment(fitted)
        exp.statistics = stats
        return exp
    build: Callable[[Config], Experiment] = resolve(topology_kind(cfg.topology.kind).simulation)
    return build(cfg)


def build_star_experiment(cfg: Config) -> Experiment:
    """A star: the server's strategy over its clients, on the executor ``[simulation]`` picks."""
    server = star_server(cfg)
    w, clients = server.workload, server.learners
    log.info(
        "task %s: %d clients (%s partition), %d parameters",
        w.task.name,
        w.data.num_clients,
        w.partitioner,
        w.model.layout.size,
    )
    sim = Simulation(
        server.strategy,
        clients,
        w.model.get(),
        executor=choose_executor(cfg, w.model, w.task, clients),
        evaluate_every=cfg.evaluation.every,
        max_weight_share=cfg.strategy.max_weight_share,
    )
    if cfg.clock.enabled:  # [clock]: simulated time, deadlines, FedAsync/FedBuff
        from murmura.simtime.wiring import apply_clock

        sim = apply_clock(cfg, sim)
    return Experiment(cfg, w.task, w.data, w.model, sim, server.byzantine)
