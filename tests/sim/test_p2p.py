import math
from collections.abc import Iterator
from typing import Any

import networkx as nx
import numpy as np
import pytest
import torch

from murmura.attacks.peer_sender import peer_attack
from murmura.client import FlatModel, LocalSGD
from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.peer_learner import (
    ClippedMixer,
    LocalWork,
    PeerLearner,
    make_mixer,
    present_weights,
    weighted_mix,
)
from murmura.sim.builder import build_experiment
from murmura.sim.p2p import P2POptions, P2PSimulation, run_p2p
from murmura.tasks import DigitsTask
from murmura.topology import build_topology, metropolis_hastings, spectral_gap
from murmura.types import EvaluateRes, FitIns, FitRes, Vector


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models: extra intra-op threads only fight the other processes on a shared box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Frozen:
    """A peer that does no local training: pure gossip."""

    node_id = "frozen"

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(np.zeros_like(ins.weights, dtype=np.float32), 1, {"train_loss": 0.0})

    def evaluate(self, weights: Vector) -> EvaluateRes:
        return EvaluateRes(0.0, 0)


def _pure(graph: nx.Graph, x0: np.ndarray, **opts: Any) -> P2PSimulation:
    n = graph.number_of_nodes()
    return P2PSimulation(graph, [Frozen()] * n, x0, P2POptions(**opts))


@pytest.mark.parametrize(("kind", "n"), [("ring", 16), ("torus", 16), ("complete", 16)])
def test_pure_gossip_converges_to_the_average_at_the_spectral_rate(kind: str, n: int) -> None:
    graph = build_topology(kind, n=n)
    x0 = np.random.default_rng(0).normal(size=(n, 10)).astype(np.float32)
    sim = _pure(graph, x0, evaluate_every=0)
    history = sim.run(300)
    assert np.allclose(sim.x, x0.mean(axis=0), atol=1e-4)
    assert np.allclose(history.weights, x0.mean(axis=0), atol=1e-4)
    dist = [m.extra["consensus_distance"] for m in history.rounds]
    assert isinstance(dist[0], float)
    rate = 1 - spectral_gap(metropolis_hastings(graph))
    if rate > 0.01:  # the complete graph is exact after one step
        # consensus distance is squared: it decays like (1 - gap)^2 per round once the
        # slowest mode dominates (rounds 8-12 here; later the torus hits float32 round-off)
        ratio = (dist[12] / dist[8]) ** (1 / 4)
        assert rate**2 * 0.95 <= ratio <= rate**2 * 1.05


def test_missing_neighbours_are_skipped_and_the_average_is_kept() -> None:
    graph = build_topology("torus", n=16)
    x0 = np.random.default_rng(1).normal(size=(16, 5)).astype(np.float32)
    sim = _pure(graph, x0, dropout=0.3, seed=3)
    history = sim.run(200)
    assert sum(len(m.failures) for m in history.rounds) > 0
    assert all(m.participants == 16 - len(m.failures) for m in history.rounds)
    assert np.allclose(sim.x, x0.mean(axis=0), atol=1e-4)


def test_time_varying_random_matchings_reach_the_average() -> None:
    graph = build_topology("complete", n=16)
    x0 = np.random.default_rng(2).normal(size=(16, 5)).astype(np.float32)
    sim = _pure(graph, x0, time_varying=True, seed=0)
    sim.run(150)
    assert np.allclose(sim.x, x0.mean(axis=0), atol=1e-4)


def test_present_weights_renormalise_onto_self() -> None:
    row = {0: 0.4, 1: 0.3, 2: 0.3}
    others, w, w_self = present_weights(0, {1: np.zeros(2, np.float32)}, row)
    assert others == [1] and w.tolist() == [0.3] and w_self == pytest.approx(0.7)
    own, nb = np.ones(2, np.float32), np.zeros(2, np.float32)
    assert np.allclose(weighted_mix(0, own, {1: nb}, row), 0.7)


def sign_flip(**args: Any) -> Any:
    """The sign-flipping peer sender of ``ATTACKS`` (as ``[topology] attack`` builds it)."""
    return peer_attack("sign_flip", args, "peer-0", 2, 0)


def test_sign_flip_changes_only_what_is_sent() -> None:
    before, after = np.ones(3, np.float32), np.full(3, 2.0, np.float32)
    assert np.allclose(sign_flip()(1, before, after), 0.0)  # before - (after - before)
    assert np.allclose(sign_flip(scale=2.0, relative_to="model")(1, before, after), -4.0)
    with pytest.raises(ConfigError):
        sign_flip(scale=0.0)
    with pytest.raises(ConfigError, match="relative_to"):
        sign_flip(relative_to="origin")


def test_make_mixer_names_and_errors() -> None:
    assert make_mixer("none") is weighted_mix
    assert isinstance(make_mixer("clipped", tau=1.0), ClippedMixer)
    with pytest.raises(ConfigError, match="valid: none, clipped"):
        make_mixer("nope")
    with pytest.raises(TypeError):
        make_mixer("trimmed_mean", params={"nope": 1})
    with pytest.raises(ConfigError, match="cannot run on a peer"):
        peer_attack("nope", {}, "peer-0", 2, 0)


def _byzantine_case(mixer_name: str, rounds: int, **mixer: Any) -> float:
    """Honest peers start near ``1`` with no training; peers 0, 9, 12 send ``-3`` x their model.

    On the 4x4 torus, peers 8 and 13 then have two Byzantine neighbours out of four.
    """
    graph = build_topology("torus", n=16)
    x0 = np.ones((16, 8)) + np.random.default_rng(0).normal(0, 0.01, (16, 8))
    byz = {i: sign_flip(scale=3.0, relative_to="model") for i in (0, 9, 12)}
    sim = _pure(graph, x0.astype(np.float32), mixer=make_mixer(mixer_name, **mixer), byzantine=byz)
    sim.run(rounds)
    return float(np.abs(sim.x[sim.honest] - 1.0).max())


def test_robust_gossip_keeps_honest_peers_bounded_under_sign_flip() -> None:
    # plain gossip: the honest peers are dragged all the way from 1 towards 0 and beyond
    assert _byzantine_case("none", 20) > 0.9
    # ClippedGossip moves a peer by at most tau * (weight on Byzantine neighbours <= 0.4) a
    # round; with no gradient to pull back, that is the only bound there is
    assert _byzantine_case("clipped", 20, tau=0.01) < 0.03 + 20 * 0.01 * 0.4
    # a median over self + 4 neighbours ignores up to 2 outliers
    assert _byzantine_case("coordinate_median", 100) < 0.03


def test_peer_trainer_dpsgd_walks_through_its_epochs() -> None:
    x = torch.arange(10, dtype=torch.float32).reshape(10, 1)
    work = LocalWork("dpsgd", LocalSGD(batch_size=4), steps=1)
    y = torch.zeros(10, dtype=torch.int64)
    trainer = PeerLearner(0, x, y, DigitsTask(), FlatModel(torch.nn.Linear(1, 1)), work, seed=0)
    seen = torch.cat([trainer._next_indices(5) for _ in range(2)])
    assert sorted(seen.tolist()) == list(range(10))  # two draws of 5 cover one epoch
    with pytest.raises(ConfigError):
        LocalWork("dpsgd", LocalSGD(), steps=0)


def _digits_config(**topology: Any) -> dict[str, Any]:
    return {
        "run": {"rounds": 3, "seed": 0},
        "partition": {"kind": "dirichlet", "num_clients": 20},
        "client": {"epochs": 1, "batch_size": 16, "lr": 0.05},
        "topology": topology,
    }


def test_config_runs_dpsgd_on_a_ring_of_peers_holding_client_blocks() -> None:
    cfg = config_from_dict(_digits_config(kind="ring", args={"n": 5}, local_steps=2))
    history = run_p2p(cfg)
    assert len(history.rounds) == 3
    last = history.rounds[-1]
    assert last.test_accuracy is not None and 0 <= last.test_accuracy <= 1
    assert {"accuracy_std", "accuracy_min", "accuracy_max", "consensus_distance"} <= set(last.extra)
    assert history.weights.shape == (64 * 64 + 64 + 64 * 10 + 10,)
    topology = history.rounds[0].extra["topology"]
    assert topology["n"] == 5 and topology["edges"] == 5  # type: ignore[index]
    # ring of 5 with MH weights 1/3: second eigenvalue 1/3 + 2/3 cos(2 pi / 5)
    expected_gap = 2 / 3 * (1 - math.cos(2 * math.pi / 5))
    assert abs(topology["spectral_gap"] - expected_gap) < 1e-9  # type: ignore[index]
    assert "topology" not in history.rounds[1].extra


def test_config_byzantine_gossip_and_errors() -> None:
    cfg = config_from_dict(
        _digits_config(
            kind="ring", args={"n": 5}, algorithm="gossip", byzantine_fraction=0.2, robust="clipped"
        )
    )
    exp = build_experiment(cfg)
    assert isinstance(exp.simulation, P2PSimulation)
    assert len(exp.simulation.options.byzantine) == 1
    assert len(exp.simulation.honest) == 4
    named = _digits_config(kind="ring", args={"n": 5}, byzantine_peers=[1, 3])
    sim = build_experiment(config_from_dict(named)).simulation
    assert isinstance(sim, P2PSimulation) and sim.honest == [0, 2, 4]
    with pytest.raises(ConfigError, match="byzantine_peers"):
        build_experiment(config_from_dict(_digits_config(kind="ring", byzantine_peers=[30])))
    with pytest.raises(ConfigError):
        build_experiment(config_from_dict(_digits_config(kind="ring", args={"n": 30})))
    with pytest.raises(ConfigError):
        build_experiment(config_from_dict(_digits_config(kind="ring", robust="nope")))
