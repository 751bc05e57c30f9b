"""Topology kinds (``[topology] kind``) and the role builders each one composes.

A star is one server over the clients; a tree is a root server over edges (``compose.edge``)
over clients; any other graph of ``murmura.topology`` is peer-to-peer (``compose.peer``).
``murmura server`` deploys a kind's ``server`` and the simulation runs its ``simulation``
(named as ``"module:function"``: the simulation package sits above this one), so a new kind
made of these roles is one entry here, its graph, and its simulated run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from murmura.compose.server import Server, star_server, tree_root
from murmura.config import Config


@dataclass(frozen=True, slots=True)
class TopologyKind:
    """What a topology kind is built from."""

    server: Callable[[Config], Server] | None
    """Its root server (simulated, and ``murmura server``); None: peers, with no server."""
    simulation: str
    """``"module:function"`` building its simulated ``Experiment``."""


TOPOLOGY_KINDS: dict[str, TopologyKind] = {
    "star": TopologyKind(star_server, "murmura.sim.builder:build_star_experiment"),
    "tree": TopologyKind(tree_root, "murmura.sim.hierarchical:build_hierarchical_experiment"),
}
PEER_TO_PEER = TopologyKind(None, "murmura.sim.p2p:build_p2p_experiment")


def topology_kind(name: str) -> TopologyKind:
    """The kind ``name``; any graph not listed here is peer-to-peer."""
    return TOPOLOGY_KINDS.get(name, PEER_TO_PEER)
