"""A simulated run's checkpoint: everything that shapes the rounds after it, in one file.

``murmura run`` checkpoints a simulation every ``[simulation] checkpoint_every`` rounds so that
``murmura run --resume`` goes on bitwise as an uninterrupted run would. Every random stream of
a round is derived from (seed, round, client) (``murmura.seeding``), so what carries over
between rounds is state: the model (each peer's, peer-to-peer); the strategy's (``Stateful``:
server optimiser moments, privacy accountant, adaptive clip norm, SCAFFOLD's server variate);
the round observer's (anomaly streaks and flags); the peers' privacy budgets; each client's
or peer's that keeps one (SCAFFOLD's ``c_i``, a tree edge's own strategy, a D-PSGD peer's
sample stream), found through privacy and attack wrappers; and torch's global random state.
The file is the coordinator's checkpoint format (``murmura.node.checkpoint``): one
safetensors file written atomically, JSON structure and raw tensors, no pickle, a content
digest checked on reading; its model tensors are the run's model (the honest peers' average,
peer-to-peer).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from murmura.errors import CheckpointError
from murmura.node.checkpoint import (
    SavedState,
    read_checkpoint,
    restore_strategy_state,
    strategy_state,
    write_checkpoint,
)
from murmura.sim.p2p import P2PSimulation
from murmura.sim.runtime import Simulation
from murmura.strategy.hooks import Stateful
from murmura.types import Layout, Vector

log = logging.getLogger(__name__)
KIND = "murmura.simulation"
DAMAGED = ".damaged"
AnySimulation = Simulation | P2PSimulation


def checkpoint_file(run_path: Path, round_: int) -> Path:
    """Where the state after ``round_`` is kept."""
    return run_path / "checkpoints" / f"round-{round_:05d}.safetensors"


def client_state_holder(client: object) -> Stateful | None:
    """The part of a client that keeps state between rounds, under its wrappers, if any.

    Privacy and attack wrappers keep none of their own and hold the client as ``inner``.
    """
    seen = 0
    while client is not None and seen < 16:
        if isinstance(client, Stateful):
            return client
        client, seen = getattr(client, "inner", None), seen + 1
    return None


def state_holders(sim: AnySimulation) -> dict[str, Stateful]:
    """The clients or peers of ``sim`` that keep state between rounds, by node id (look once)."""
    nodes = sim.clients if isinstance(sim, Simulation) else {c.node_id: c for c in sim.learners}
    holders = {n: client_state_holder(c) for n, c in nodes.items()}
    return {n: h for n, h in holders.items() if h is not None}


def model_of(sim: AnySimulation) -> Vector:
    """The run's model: the global one, or the honest peers' average."""
    return sim.model()


def simulation_state(
    sim: AnySimulation,
    round_: int,
    config_sha256: str,
    holders: Mapping[str, Stateful] | None = None,
) -> SavedState:
    """The state of ``sim`` after ``round_`` (but a star's model, the file's own tensors)."""
    holders = state_holders(sim) if holders is None else holders
    state: dict[str, object] = {
        "round": round_,
        "config_sha256": config_sha256,
        "clients": {node: dict(h.state_dict() or {}) for node, h in holders.items()},
        "torch_rng": torch.get_rng_state().numpy().copy(),
    }
    if isinstance(sim, Simulation):
        strategy, observer = strategy_state(sim.strategy), sim.observer
        state["strategy_class"] = None if strategy is None else strategy.strategy
        state["strategy"] = None if strategy is None else strategy.state
        state["observer"] = dict(observer.state_dict()) if isinstance(observer, Stateful) else None
    else:
        state["peers"] = sim.x.copy()
        state["budgets"] = [b.state_dict() for b in sim.options.budgets]
    return SavedState(KIND, state)


def save_simulation(
    path: Path,
    sim: AnySimulation,
    layout: Layout,
    round_: int,
    metadata: Mapping[str, str],
    holders: Mapping[str, Stateful] | None = None,
) -> None:
    """Write the checkpoint of ``sim`` after ``round_`` atomically.

    Without fsync: a simulation can recompute what a power loss damages, and a damaged file
    is found by its digest and passed over on resume (``newest_checkpoint``). ``metadata``
    (``murmura.ops.run_dir.model_metadata``) names the config's SHA-256, which the state
    repeats.
    """
    state = simulation_state(sim, round_, metadata["murmura.config_sha256"], holders)
    write_checkpoint(path, model_of(sim), layout, state, metadata, durable=False)


def restore_simulation(sim: AnySimulation, layout: Layout, path: Path, config_sha256: str) -> int:
    """Load a checkpoint into a freshly built ``sim``; return its round.

    ``CheckpointError`` names the file and what does not fit: a config other than the one
    with SHA-256 ``config_sha256`` (``murmura.ops.run_dir.config_sha256``), another strategy,
    other clients.
    """
    weights, saved = read_checkpoint(path, layout)
    if saved is None or saved.strategy != KIND:
        raise CheckpointError(f"{path} is not a checkpoint of a simulated run")
    s: dict[str, Any] = saved.state
    if s.get("config_sha256") != config_sha256:
        raise CheckpointError(
            f"{path} was written under another config (SHA-256 {s.get('config_sha256')}, "
            f"config.toml has {config_sha256}): put back the config.toml the run began with"
        )
    try:
        if isinstance(sim, Simulation):
            _restore_star(sim, s, path)
            sim.weights = np.asarray(weights, dtype=np.float32).copy()
        else:
            _restore_peers(sim, s)
        states: Mapping[str, Any] = s["clients"]
        holders = state_holders(sim)
        if set(states) != set(holders):
            raise CheckpointError(f"{path}: holds the state of other clients than this run's")
        for node, state in states.items():
            holders[node].load_state_dict(state)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: the saved state does not fit this run: {exc}") from None
    torch.set_rng_state(torch.from_numpy(np.asarray(s["torch_rng"], dtype=np.uint8)))
    return int(s["round"])


def _restore_star(sim: Simulation, s: Mapping[str, Any], path: Path) -> None:
    inner = None
    if s.get("strategy_class") is not None:
        inner = SavedState(str(s["strategy_class"]), dict(s["strategy"]))
    restore_strategy_state(sim.strategy, inner, str(path))
    observer = sim.observer
    if isinstance(observer, Stateful) != (s.get("observer") is not None):
        raise CheckpointError(f"{path}: the [anomaly] monitor differs from this run's")
    if isinstance(observer, Stateful):
        observer.load_state_dict(s["observer"])


def _restore_peers(sim: P2PSimulation, s: Mapping[str, Any]) -> None:
    peers = np.asarray(s["peers"], dtype=np.float32)
    if peers.shape != sim.x.shape:
        raise ValueError(f"{peers.shape[0]} peers' models saved, the graph has {sim.x.shape[0]}")
    budgets = list(s["budgets"])
    if len(budgets) != len(sim.options.budgets):
        raise ValueError(f"{len(budgets)} privacy budgets saved, the run has another number")
    sim.x = peers.copy()
    for budget, state in zip(sim.options.budgets, budgets, strict=True):
        budget.load_state_dict(state)


def newest_checkpoint(folder: Path, sim: AnySimulation, layout: Layout, config_sha256: str) -> int:
    """Restore the newest checkpoint in ``folder`` that verifies; return its round (0: none).

    A damaged one (cut off, changed: its digest says so) is renamed ``*.damaged`` with a
    warning and the next older one is tried; with none left the run starts over from round 1
    (a simulation rebuilds round 0). One that verifies but does not fit this run is an error.
    """
    for path in sorted(folder.glob("round-*.safetensors"), reverse=True):
        try:
            read_checkpoint(path, layout)
        except CheckpointError as exc:
            os.replace(path, path.with_name(path.name + DAMAGED))
            log.warning("damaged checkpoint: %s; renamed to %s%s", exc, path.name, DAMAGED)
            continue
        return restore_simulation(sim, layout, path, config_sha256)
    return 0
