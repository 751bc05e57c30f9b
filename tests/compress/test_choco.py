"""CHOCO-gossip (Koloskova et al. 2019): exact codecs give plain gossip, coarse ones converge."""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np
import pytest

from murmura.compress import framed_size, make_codec
from murmura.compress.choco import ChocoGossip, PeerCopies, gossip_bytes
from murmura.compress.frame import unframe
from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.sim.builder import build_experiment
from murmura.topology import metropolis_hastings, neighbour_weights

W = metropolis_hastings(nx.cycle_graph(6))


def spread(x: np.ndarray) -> float:
    return float(np.linalg.norm(x - x.mean(axis=0)))


def test_a_near_exact_codec_with_step_one_is_plain_gossip() -> None:
    x = np.random.default_rng(0).normal(size=(6, 20)).astype(np.float32)
    choco = ChocoGossip(make_codec("float16"), np.zeros((6, 20)), step=1.0, seed=0)
    choco.exchange(1, x, list(range(6)))
    np.testing.assert_allclose(choco.mix(W, x, list(range(6))), W @ x, atol=2e-3)


def test_topk_consensus_keeps_the_average_and_contracts() -> None:
    x = np.random.default_rng(1).normal(size=(6, 50)).astype(np.float32)
    mean, start = x.mean(axis=0), spread(x)
    choco = ChocoGossip(make_codec("topk", ratio=0.2), np.zeros((6, 50)), step=0.3, seed=0)
    for r in range(1, 301):
        choco.exchange(r, x, list(range(6)))
        x = choco.mix(W, x, list(range(6)))
    np.testing.assert_allclose(x.mean(axis=0), mean, atol=1e-4)  # W symmetric: sum preserved
    assert spread(x) < 0.01 * start


def test_an_absent_peer_keeps_its_model_and_sends_nothing() -> None:
    x = np.random.default_rng(2).normal(size=(6, 8)).astype(np.float32)
    choco = ChocoGossip(make_codec("sign"), np.zeros((6, 8)), step=0.5, seed=0)
    present = [0, 1, 2, 4, 5]
    sizes = choco.exchange(1, x, present)
    out = choco.mix(W, x, present)
    assert 3 not in sizes and np.array_equal(out[3], x[3]) and not choco.public[3].any()
    up, down = gossip_bytes(W, {i: float(b) for i, b in sizes.items()})
    one = framed_size(make_codec("sign"), 8)
    assert up == [2 * one, 2 * one, one, one, 2 * one]  # 2 and 4 lost their neighbour 3
    assert down == up


def p2p(**compression: Any) -> dict[str, Any]:
    return {
        "run": {"seed": 0, "rounds": 3},
        "task": {"name": "digits"},
        "partition": {"kind": "iid", "num_clients": 8},
        "topology": {"kind": "ring", "algorithm": "gossip"},
        "client": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        "compression": compression,
    }


def test_p2p_simulation_exchanges_compressed_differences_and_reports_bytes() -> None:
    cfg = config_from_dict(p2p(uplink="topk", args={"ratio": 0.1}, gossip_step=0.2))
    exp = build_experiment(cfg)
    d = exp.model.layout.size
    rounds = [m.to_json() for m in exp.simulation.run(3).rounds]
    q = framed_size(make_codec("topk", ratio=0.1), d)
    assert all(m["bytes_up_mean"] == m["bytes_down_max"] == 2 * q for m in rounds)  # ring
    assert rounds[-1]["test_accuracy"] > 0.6  # it learns (0.36 after round 1)
    from murmura.compress.plan import Links
    from murmura.compress.plan_cli import plans

    (_, dense), (_, planned) = plans(cfg, d, Links(1e7, 1e7))
    assert (planned.node_up, planned.total) == (2 * q, rounds[0]["bytes_up_total"])
    assert dense.node_up == 2 * 4 * d
    plain = build_experiment(config_from_dict(p2p())).simulation.run(3).rounds
    assert plain[0].to_json()["bytes_up_mean"] == 2 * 4 * d
    assert plain[0].to_json()["bytes_down_total"] == 8 * 2 * 4 * d
    # float16 differences at step 1 mix like plain gossip
    half = build_experiment(config_from_dict(p2p(uplink="float16", gossip_step=1.0)))
    same = half.simulation.run(3).rounds
    assert [m.test_accuracy for m in same] == pytest.approx([m.test_accuracy for m in plain])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "gossip_step .* is required with a P2P uplink"),
        ({"gossip_step": 0.5, "robust": "clipped"}, "with topology.robust"),
        ({"gossip_step": 0.5, "time_varying": True}, "with topology.time_varying"),
    ],
)
def test_choco_refuses_what_it_cannot_keep_consistent(extra: dict[str, Any], message: str) -> None:
    cfg = p2p(
        uplink="topk",
        **({"gossip_step": extra.pop("gossip_step")} if "gossip_step" in extra else {}),
    )
    cfg["topology"].update(extra)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(cfg)


def test_gossip_step_is_refused_outside_p2p() -> None:
    with pytest.raises(ConfigError, match="gossip_step is set but topology.kind = 'star'"):
        config_from_dict(
            {"compression": {"uplink": "topk", "gossip_step": 0.5}, "partition": {"num_clients": 4}}
        )


@pytest.mark.parametrize("codec", ["topk", "qsgd", "sign"])
def test_each_peer_s_own_copies_follow_the_simulated_exchange(codec: str) -> None:
    """A deployed peer holds only its and its neighbours' copies; it mixes to the same model."""
    graph = nx.cycle_graph(6)
    rows = neighbour_weights(graph)
    start = np.random.default_rng(1).normal(size=30).astype(np.float32)
    args = {"ratio": 0.2} if codec == "topk" else {}
    sim = ChocoGossip(make_codec(codec, **args), np.tile(start, (6, 1)), step=0.4, seed=3)
    peers = [PeerCopies(make_codec(codec, **args), start, 0.4, 3, i, rows[i]) for i in range(6)]
    x = np.tile(start, (6, 1))
    rng = np.random.default_rng(2)
    for r in (1, 2, 3):
        trained = x + rng.normal(size=x.shape).astype(np.float32)
        sim.exchange(r, trained, list(range(6)))
        expected = sim.mix(W, trained, list(range(6)))
        wires = [p.encode(r, trained[i]) for i, p in enumerate(peers)]
        for p in peers:
            for j in p.row:
                p.receive(j, unframe(p.codec, wires[j], 30))
        x = np.stack([p.mix(trained[i], list(p.row)) for i, p in enumerate(peers)])
        np.testing.assert_allclose(x, expected, rtol=0, atol=1e-6)
        assert not np.allclose(x, W @ trained, atol=1e-3)  # the codec changed the mixing
        for p in peers:
            for j, copy in p.public.items():
                np.testing.assert_array_equal(copy, sim.public[j])
