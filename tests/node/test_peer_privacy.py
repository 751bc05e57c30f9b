"""A deployed peer applies ``[privacy]`` as the simulated peer does: same model, same epsilon.

Three ``murmura peer`` nodes (built by ``build_peer``, run in one event loop over loopback
gRPC) on a ring train digits with peer-level local DP, and with DP-SGD; each ends with the
very model its simulated twin ends with (``P2PSimulation``, same config and seed), and writes
the simulation's epsilon for every round to its ``metrics.jsonl``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from portpool import free_ports

from murmura.config import config_from_dict
from murmura.node.topology_deploy import build_peer
from murmura.sim.builder import build_experiment
from murmura.sim.p2p import P2PSimulation

pytestmark = [pytest.mark.network]

PEERS, ROUNDS = 3, 2


def _run_config(privacy: dict[str, object]) -> dict[str, object]:
    return {
        "run": {"name": "p2p-dp", "rounds": ROUNDS, "seed": 4},
        "task": {"name": "digits"},
        "partition": {"kind": "iid", "num_clients": 6},
        "client": {"batch_size": 16, "lr": 0.1},
        "evaluation": {"every": 0},
        "topology": {"kind": "ring", "args": {"n": PEERS}, "local_steps": 2},
        "privacy": privacy,
    }


async def _deploy(path: Path) -> list[np.ndarray]:
    peers = [build_peer(path, i, insecure=True) for i in range(PEERS)]
    results = await asyncio.gather(*(p.run() for p in peers))
    assert [r.last_round for r in results] == [ROUNDS] * PEERS
    assert not any(r.missing for r in results)  # every exchange happened
    return [r.weights for r in results]


@pytest.mark.parametrize(
    ("privacy", "key"),
    [
        ({"mode": "local", "noise_multiplier": 0.8, "clip_norm": 0.5}, "epsilon"),
        ({"dp_sgd": True, "dp_sgd_noise_multiplier": 1.1}, "sample_epsilon"),
    ],
)
def test_deployed_peers_train_privately_like_the_simulated_ones(
    tmp_path: Path, privacy: dict[str, object], key: str
) -> None:
    run = _run_config(privacy)
    state = tmp_path / "state"
    peers = {
        "addresses": [f"127.0.0.1:{p}" for p in free_ports(PEERS)],
        "state_dir": str(state),
        "round_timeout": 20.0,
        "join_timeout": 20.0,
    }
    path = tmp_path / "ring.toml"
    path.write_text(tomli_w.dumps({**run, "peers": peers}))

    deployed = asyncio.run(_deploy(path))

    sim = build_experiment(config_from_dict(run)).simulation
    assert isinstance(sim, P2PSimulation)
    history = sim.run(ROUNDS)
    for i, weights in enumerate(deployed):
        np.testing.assert_array_equal(weights, sim.x[i])  # bitwise: the same noise and steps
        text = (state / f"peer-{i}" / "metrics.jsonl").read_text()
        lines = [json.loads(x) for x in text.splitlines()]
        assert [m["round"] for m in lines] == [1, 2]
        for line, m in zip(lines, history.rounds, strict=True):
            assert line[key] == pytest.approx(m.extra[key], rel=1e-12)
    plain = build_experiment(config_from_dict(_run_config({}))).simulation
    plain.run(ROUNDS)
    assert not np.allclose(deployed[0], plain.x[0], atol=1e-4)  # privacy changed the model


def test_a_deployed_peer_stops_before_the_target_and_charges_every_round(tmp_path: Path) -> None:
    privacy = {"mode": "local", "noise_multiplier": 2.0, "target_epsilon": 4.5}
    run = _run_config(privacy)
    run["run"] = {"name": "p2p-dp", "rounds": 6, "seed": 4}
    peers = {
        "addresses": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
        "state_dir": str(tmp_path / "s"),
    }
    path = tmp_path / "ring.toml"
    path.write_text(tomli_w.dumps({**run, "peers": peers}))
    history = build_experiment(config_from_dict(run)).simulation.run(6)
    ran = len(history.rounds)
    assert 1 < ran < 6  # the simulation stopped early

    peer = build_peer(path, 1, insecure=True)
    assert [peer._budget_stops(r) for r in range(1, ran + 2)] == [False] * ran + [True]
    fresh = build_peer(path, 2, insecure=True)
    assert fresh._budget_stops(ran + 1)  # resumed or jumped there: every round is charged
    (budget,) = fresh.budgets
    assert budget.epsilon == pytest.approx(history.rounds[-1].extra["epsilon"], rel=1e-12)
