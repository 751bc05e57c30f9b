"""One attack, one malicious update: the star, the tree, simulated and deployed peers agree."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from murmura.attacks import AttackContext, attack_client, make_attack
from murmura.attacks.omniscient import alie_update, alie_z_max
from murmura.attacks.peer_sender import peer_attack
from murmura.config import TopologySection, config_from_dict
from murmura.errors import ConfigError
from murmura.node.topology_deploy import RedTeam, red_team_sender
from murmura.sim.builder import build_experiment
from murmura.sim.hierarchical import EdgeAggregator
from murmura.sim.p2p import byzantine_senders
from murmura.strategy import STRATEGIES
from murmura.topology import build_topology
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

CTX = AttackContext(num_clients=5, cohort_size=5, server_lr=1.0, seed=7)


class Fixed:
    """A client (star or tree leaf) that always trains to the same update."""

    def __init__(self, node_id: str, update: list[float] | Vector, n: int = 10) -> None:
        self.node_id, self.update, self.n = node_id, np.asarray(update, np.float32), n

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(self.update.copy(), self.n)

    def evaluate(self, weights: Vector) -> EvaluateRes:
        return EvaluateRes(0.0, self.n)


@pytest.mark.parametrize(
    ("kind", "args"),
    [("sign_flip", {"scale": 2.0}), ("gaussian", {"std": 3.0}), ("scaling", {"boost": 4.0})],
)
def test_a_client_and_a_peer_send_the_same_malicious_update(
    kind: str, args: dict[str, Any]
) -> None:
    update = np.random.default_rng(0).normal(size=50).astype(np.float32)
    before = np.full(50, 0.5, np.float32)
    star = attack_client(Fixed("peer-3", update), make_attack(kind, CTX, args))
    sent_by_client = star.fit(FitIns(4, before)).update
    peer = peer_attack(kind, args, "peer-3", 4, CTX.seed)  # what simulated P2P and deploy use
    sent_by_peer = peer(4, before, before + update) - before
    np.testing.assert_allclose(sent_by_peer, sent_by_client, rtol=1e-6, atol=1e-5)
    if kind == "sign_flip":  # the one definition: -scale * u
        np.testing.assert_allclose(sent_by_client, -2.0 * update)


@pytest.mark.parametrize(
    ("kind", "args"), [("sign_flip", {}), ("gaussian", {"std": 5.0}), ("scaling", {})]
)
def test_simulated_and_deployed_peers_send_the_same_models(kind: str, args: dict[str, Any]) -> None:
    graph = build_topology("ring", n=6)
    t = TopologySection(kind="ring", byzantine_peers=[2], attack=kind, attack_args=args)
    simulated = byzantine_senders(t, graph, seed=11)[2]
    deployed = red_team_sender(RedTeam(kind, args), "peer-2", graph.degree(2), 11)
    before = np.random.default_rng(1).normal(size=30).astype(np.float32)
    after = before + np.float32(0.25)
    for round_ in (1, 2):
        np.testing.assert_array_equal(
            simulated(round_, before, after), deployed(round_, before, after)
        )


def test_peer_updates_are_measured_from_the_chosen_reference() -> None:
    before, after = np.ones(4, np.float32), np.full(4, 3.0, np.float32)
    delta = peer_attack("sign_flip", {}, "peer-0", 2, 0)(1, before, after)
    model = peer_attack("sign_flip", {"relative_to": "model"}, "peer-0", 2, 0)(1, before, after)
    np.testing.assert_array_equal(delta, before - (after - before))
    np.testing.assert_array_equal(model, -after)


def test_a_tree_edge_lets_its_omniscient_children_craft_from_its_honest_ones() -> None:
    honest = [Fixed("a", [1.0, 0.0]), Fixed("b", [3.0, 2.0]), Fixed("c", [2.0, 4.0])]
    alie = attack_client(Fixed("x", [9.0, 9.0]), make_attack("alie", CTX, {}))
    edge = EdgeAggregator("edge-1", [*honest, alie], STRATEGIES.get("fedavg")())
    delta = edge.fit(FitIns(1, np.zeros(2, np.float32))).update
    rows = np.array([h.update for h in honest])
    expected = (rows.sum(0) + alie_update(rows, alie_z_max(4, 1))) / 4  # as in the star
    np.testing.assert_allclose(delta, expected, rtol=1e-6)


def test_star_and_tree_run_the_same_seeded_attackers() -> None:
    base = {
        "run": {"rounds": 1, "seed": 3},
        "partition": {"kind": "iid", "num_clients": 10},
        "attack": {"kind": "sign_flip", "fraction": 0.3},
    }
    star = build_experiment(config_from_dict(base))
    tree = build_experiment(config_from_dict({**base, "topology": {"kind": "tree", "edges": 2}}))
    assert star.byzantine == tree.byzantine and len(star.byzantine) == 3


def test_a_peer_to_peer_simulation_refuses_the_star_attack_table() -> None:
    with pytest.raises(ConfigError, match=r"\[attack\] wraps a star's or a tree's clients"):
        config_from_dict(
            {
                "partition": {"num_clients": 5},
                "topology": {"kind": "ring"},
                "attack": {"kind": "sign_flip", "fraction": 0.4},
            }
        )
