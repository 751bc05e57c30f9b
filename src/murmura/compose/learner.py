"""A client's learner (a star client, a tree leaf, a deployed worker) with its wrappers.

The order is the same wherever a learner is built: privacy (local DP, DP-SGD) around the
plain learner, then the uplink codec (it encodes what privacy released; a deployed worker
encodes at the wire), then the strategy's per-client state (SCAFFOLD, a star's clients),
then ``[attack]`` (an attacker keeps DP-SGD). ``compose.server`` assembles a simulated
server's clients in this order; ``worker_learner`` is one deployed worker's.
"""

from __future__ import annotations

from collections.abc import Sequence

from murmura.attacks.wiring import attacking_learner
from murmura.client import Client, LocalSGD, TorchClient
from murmura.compose.workload import Workload, workload
from murmura.config import Config
from murmura.privacy.wiring import private_learners
from murmura.strategy import Strategy


def plain_clients(cfg: Config, w: Workload) -> list[TorchClient]:
    """Every client of the run, training with ``[client]``'s hyper-parameters."""
    hp = LocalSGD(**cfg.client.model_dump())
    return [
        TorchClient(cid, w.data, w.task, w.model, hp, seed=cfg.run.seed)
        for cid in range(w.data.num_clients)
    ]


def with_client_state(strategy: Strategy, clients: Sequence[Client]) -> list[Client]:
    """Each client with the strategy's per-client state (SCAFFOLD's ``wrap_client``)."""
    wrap = getattr(strategy, "wrap_client", None)
    return [wrap(c) for c in clients] if callable(wrap) else list(clients)


def worker_learner(cfg: Config, index: int) -> Client:
    """Client ``index``'s learner on this machine, as simulated client ``index`` is wrapped.

    ``[privacy]``'s local DP and DP-SGD wrap it with the same wrappers and noise stream; the
    server keeps the budgets and sends the hyper-parameters every round. ``[attack]`` makes
    it the simulation's attacker when the simulation's seeded choice picks client ``index``.
    One torch thread: several workers often share a machine, and small models train
    fastest on one.
    """
    w = workload(cfg, threads=1)
    local = TorchClient(index, w.data, w.task, w.model, LocalSGD(), seed=cfg.run.seed)
    (learner,), _ = private_learners(cfg, [local], first_index=index)
    if cfg.attack.kind == "none":
        return learner
    return attacking_learner(cfg, learner, index, w.data)
