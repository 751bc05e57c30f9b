"""The composition root: the simulation and the deployed roles build from the same builders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from murmura.compose.kinds import PEER_TO_PEER, TOPOLOGY_KINDS, topology_kind
from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.node.deploy import ServerSection, build_coordinator
from murmura.node.topology_deploy import EdgeSection, edge_strategy
from murmura.sim.builder import build_experiment
from murmura.sim.hierarchical import EdgeAggregator
from murmura.strategy.anomaly import Flagging
from murmura.topology import TOPOLOGIES

BASE: dict[str, Any] = {
    "run": {"rounds": 2, "seed": 5},
    "partition": {"num_clients": 8},
    "client": {"epochs": 1},
}


def test_every_graph_but_the_server_kinds_is_peer_to_peer() -> None:
    assert set(TOPOLOGY_KINDS) == {"star", "tree"}
    for name in TOPOLOGIES.names():
        kind = topology_kind(name)
        assert (kind.server is None) == (name not in TOPOLOGY_KINDS), name
    assert topology_kind("ring") is PEER_TO_PEER


def test_murmura_server_runs_the_simulated_server_s_strategy(tmp_path: Path) -> None:
    # [anomaly] wraps the star's strategy in the monitor: the deployed server keeps it too
    data = {**BASE, "anomaly": {"enabled": True}, "strategy": {"name": "fedadam"}}
    cfg = config_from_dict(data)
    sim = build_experiment(cfg).simulation
    coordinator = build_coordinator(cfg, ServerSection(state_dir=str(tmp_path)), insecure=True)
    coordinator.state.close()
    coordinator.ledger.close()
    assert isinstance(coordinator.strategy, Flagging)
    assert type(coordinator.strategy.inner) is type(sim.strategy.inner)  # type: ignore[union-attr]
    np.testing.assert_array_equal(coordinator.weights, sim.weights)  # type: ignore[union-attr]


def test_murmura_server_refuses_a_peer_to_peer_kind(tmp_path: Path) -> None:
    cfg = config_from_dict({**BASE, "topology": {"kind": "ring"}})
    with pytest.raises(ConfigError, match="star or a tree's root; the config has 'ring'"):
        build_coordinator(cfg, ServerSection(state_dir=str(tmp_path)), insecure=True)


@pytest.mark.parametrize("fraction", [0.5, 0.75])
def test_a_deployed_edge_samples_its_children_as_the_simulated_edge_of_its_name(
    fraction: float,
) -> None:
    data = {**BASE, "topology": {"kind": "tree", "edges": 2}, "strategy": {"fraction": fraction}}
    cfg = config_from_dict(data)
    edges = build_experiment(cfg).simulation.clients
    for name, edge in edges.items():
        assert isinstance(edge, EdgeAggregator)
        nodes = list(edge.children)
        deployed = edge_strategy(cfg, EdgeSection(name=name, parent="127.0.0.1:1"), len(nodes))
        draws = [deployed.sample(r, nodes) for r in range(1, 9)]
        assert draws == [edge.strategy.sample(r, nodes) for r in range(1, 9)]
        assert len({tuple(d) for d in draws}) > 1  # a seeded draw, not every child each round
