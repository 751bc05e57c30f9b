"""A peer's role: the graph, its learner, its mixer and its gossip codec.

Built once for the simulated peers (``murmura.sim.p2p``) and ``murmura peer``, so both
train, privatise, mix and compress identically. Peer K holds the K-th contiguous block of
the run's clients.
"""

from __future__ import annotations

import inspect

import networkx as nx
import numpy as np
import torch

from murmura.client import FlatModel, LocalSGD
from murmura.compose.kinds import topology_kind
from murmura.compress import make_codec
from murmura.compress.base import Codec
from murmura.config import Config, TopologySection
from murmura.data.federated import Batch, FederatedDataset
from murmura.engine.peer_round import Mixer
from murmura.errors import ConfigError
from murmura.learner import Learner
from murmura.peer_learner import LocalWork, PeerLearner, make_mixer
from murmura.privacy.budget import PrivacyBudget
from murmura.privacy.local import PEER_NOISE
from murmura.privacy.wiring import private_learners
from murmura.tasks.base import Task
from murmura.topology import TOPOLOGIES, build_topology


def topology_graph(t: TopologySection, default_n: int) -> nx.Graph:
    """The P2P graph of ``[topology]``; ``n`` defaults to the number of clients."""
    if topology_kind(t.kind).server is not None:
        raise ConfigError(f"topology.kind {t.kind!r} is not a peer-to-peer graph")
    args = dict(t.args)
    if "n" in inspect.signature(TOPOLOGIES.get(t.kind)).parameters and args.get("n") is None:
        args["n"] = default_n
    return build_topology(t.kind, **args)


def peer_data(data: FederatedDataset, peers: int) -> list[Batch]:
    """Each peer's training data: the union of a contiguous block of the dataset's clients."""
    if not 1 <= peers <= data.num_clients:
        raise ConfigError(f"{peers} peers cannot share {data.num_clients} clients' data")
    blocks = np.array_split(np.arange(data.num_clients), peers)
    out = []
    for block in blocks:
        parts = [data.client_train(int(c)) for c in block]
        out.append((torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])))
    return out


def peer_learners(
    cfg: Config, task: Task, data: FederatedDataset, n: int, model: FlatModel
) -> tuple[list[Learner], list[PrivacyBudget]]:
    """All ``n`` peers' learners, privatised as ``[privacy]`` asks, and the budgets they spend.

    A deployed peer keeps its own learner and all the budgets: the DP-SGD budget is the
    smallest peer's, as in the simulation.
    """
    t = cfg.topology
    work = LocalWork(t.algorithm, LocalSGD(**cfg.client.model_dump()), t.local_steps)
    plain = [
        PeerLearner(p, x, y, task, model, work, cfg.run.seed)
        for p, (x, y) in enumerate(peer_data(data, n))
    ]
    return private_learners(cfg, plain, noise_stream=PEER_NOISE)  # as is when [privacy] is off


def peer_mixer(cfg: Config) -> Mixer:
    """How a peer mixes its neighbours' models: ``[topology] robust`` and pre-aggregation."""
    t = cfg.topology
    return make_mixer(
        t.robust,
        tau=t.tau,
        clip_weight=t.clip_weight,
        params=t.robust_args,
        pre=cfg.strategy.pre_aggregation,
        pre_params=cfg.strategy.pre_aggregation_args,
    )


def gossip_codec(cfg: Config) -> tuple[Codec, float] | None:
    """CHOCO-gossip's codec and step (``[compression] uplink``), or None for float32 models."""
    c = cfg.compression
    if c.uplink == "none":
        return None
    assert c.gossip_step is not None  # checked when the config was loaded
    return make_codec(c.uplink, **c.args), c.gossip_step
