"""Puts a star simulation on the simulated clock that ``[clock]`` describes."""

from __future__ import annotations

import logging

from murmura.config import Config
from murmura.engine.server_round import OmniscientClient
from murmura.errors import ConfigError
from murmura.sim.runtime import Simulation
from murmura.simtime.arrival import async_rule
from murmura.simtime.asynchronous import AsyncSimulation
from murmura.simtime.availability import Always, Availability, Diurnal, Trace
from murmura.simtime.clock import SimClock
from murmura.simtime.deadline import TimedExecutor, TimedSampling
from murmura.simtime.profiles import lognormal_speeds, profiles

log = logging.getLogger(__name__)


def make_clock(cfg: Config, nodes: list[str], size: int) -> SimClock:
    """The clock at 0 s with every node's profile and availability."""
    c, seed = cfg.clock, cfg.run.seed
    speeds = (
        list(c.per_sample)
        if c.speed == "given"
        else lognormal_speeds(len(nodes), c.per_sample_s, c.sigma, seed)
    )
    availability: Availability = Always()
    if c.availability == "diurnal":
        availability = Diurnal(nodes, c.period_s, c.on_fraction, seed)
    elif c.availability == "trace":
        assert c.trace is not None
        availability = Trace.read(c.trace, nodes)
    return SimClock(
        profiles(nodes, speeds, c.up_bps, c.down_bps), availability, cfg.client.epochs, size
    )


def apply_clock(cfg: Config, sim: Simulation) -> Simulation:
    """``sim`` with timed sampling and executor (sync), or the async event loop."""
    c = cfg.clock
    clock = make_clock(cfg, list(sim.clients), sim.weights.size)
    keep = cfg.cohort_size()
    if c.mode == "sync":
        executor = TimedExecutor(sim.executor, clock, keep=keep, deadline=c.deadline_s)
        own = c.availability != "always" or c.over_selection > 1
        sim.strategy = TimedSampling(
            sim.strategy,
            clock,
            executor,
            keep=keep,
            over_selection=c.over_selection,
            own_draw=own,
            minimum=max(1, cfg.strategy.min_clients),
            seed=cfg.run.seed,
        )
        sim.executor = executor
        log.info(
            "clock: synchronous rounds, deadline %s s, over-selection %s",
            c.deadline_s,
            c.over_selection,
        )
        return sim
    omniscient = [n for n, cl in sim.clients.items() if isinstance(cl, OmniscientClient)]
    if omniscient:
        raise ConfigError(
            f"attack.kind = {cfg.attack.kind!r} with clock.mode = 'async': the attack crafts "
            "its update from a round's honest updates, and asynchronous aggregation has no round"
        )
    rule = async_rule(c, keep)
    log.info("clock: %s, %d clients in flight", c.algorithm, rule.concurrency)
    return AsyncSimulation(
        sim.strategy,
        list(sim.clients.values()),
        sim.weights,
        clock=clock,
        rule=rule,
        seed=cfg.run.seed,
        executor=sim.executor,
        checks=sim.checks,
        evaluate_every=sim.evaluate_every,
        max_weight_share=sim.max_weight_share,
    )
