"""CHOCO-gossip deployed: three ``murmura peer`` processes over mTLS end as the simulation does.

Each peer serves its framed ``q_i = C(x_i - x^_i)`` (topk, named in the blob header and in the
MZC1 frame), keeps the public copies of itself and its two neighbours, and mixes toward them.
After three rounds every peer's checkpoint equals its simulated twin's model (``P2PSimulation``
with the same config and seed) to float tolerance, and ``metrics.jsonl`` carries the bytes the
simulation reports: one framed ``q`` to each neighbour, a few percent of a float32 model.
Peer 1 is killed (SIGKILL) after its first round and started again at once: it resumes from
its checkpoint with its public copies, reruns the round it was in with the same ``q_1``, and
the run still ends on the simulated models.
"""

from __future__ import annotations

import signal
import tomllib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from murmura.compress import framed_size, make_codec
from murmura.config import config_from_dict
from murmura.node.peer import checkpoint_file, read_peer_checkpoint
from murmura.sim.builder import build_experiment
from murmura.sim.p2p import P2PSimulation

pytestmark = [pytest.mark.slow, pytest.mark.network]

PEERS, ROUNDS, KILLED = 3, 3, 1

CONFIG = """
[run]
name = "choco-grpc"
seed = 5
rounds = {rounds}

[task]
name = "digits"

[partition]
kind = "iid"
num_clients = 6

[client]
batch_size = 16
lr = 0.1

[evaluation]
every = 0

[topology]
kind = "ring"
algorithm = "gossip"
args = {{ n = {peers} }}

[compression]
uplink = "topk"
gossip_step = 0.5
args = {{ ratio = 0.1 }}

[peers]
addresses = {addresses}
key_dir = "{keys}"
state_dir = "{state}"
round_timeout = 60.0
join_timeout = 60.0
"""


def test_deployed_choco_peers_end_with_the_simulated_models(
    peer_procs: Callable[..., Any],
) -> None:
    peers = peer_procs(PEERS, CONFIG, rounds=ROUNDS)
    for i in range(PEERS):
        peers.start(i)
    peers.wait_for(lambda: peers.last_round(KILLED) >= 1, 120, "peer 1 to finish round 1")
    peers.procs[KILLED].send_signal(signal.SIGKILL)
    peers.procs[KILLED].wait(10)
    peers.start(KILLED)  # within the neighbours' round deadline
    for i, p in peers.procs.items():
        assert p.wait(240) == 0, peers.log(i)
    assert "resumed from own checkpoint" in peers.log(KILLED)

    run = tomllib.loads(peers.config.read_text())
    del run["peers"]
    exp = build_experiment(config_from_dict(run))
    sim = exp.simulation
    assert isinstance(sim, P2PSimulation)
    history = sim.run(ROUNDS)
    layout = exp.model.layout
    q = framed_size(make_codec("topk", ratio=0.1), layout.size)
    for i in range(PEERS):
        got = read_peer_checkpoint(checkpoint_file(peers.state / f"peer-{i}"), layout)
        assert got is not None
        meta, weights, _ = got
        assert meta["round"] == str(ROUNDS)
        np.testing.assert_allclose(weights, sim.x[i], rtol=0, atol=1e-6)  # max 9e-8 seen
        lines = peers.metrics(i)
        rounds = [m["round"] for m in lines]
        if i == KILLED:  # may lack the line of the round it was killed in
            assert rounds[-1] == ROUNDS and set(rounds) <= {1, 2, 3}
        else:
            assert rounds == [1, 2, 3]
        assert all(m["missing"] == [] for m in lines)
        assert all(m["bytes_up"] == m["bytes_down"] == 2 * q for m in lines)
    assert history.rounds[0].to_json()["bytes_up_mean"] == 2 * q
    assert q < 0.2 * 4 * layout.size  # a fraction of the float32 model
    del run["compression"]
    plain = build_experiment(config_from_dict(run)).simulation
    plain.run(ROUNDS)
    assert not np.allclose(sim.x[0], plain.x[0], atol=1e-4)  # the codec mattered
