"""8 peers on a ring train digits over mTLS gRPC; one is killed mid-run and restarted.

Each peer is its own process (``murmura peer CONFIG --id K``) with its own certificate. Peer 3
is SIGKILLed after its second round: its neighbours skip it (weights renormalised) and go on.
It is then started again: it resumes from its own checkpoint, jumps to its neighbours' round
and mixes with them again. Every peer but the killed one finishes every round, and the mean
final accuracy is far above chance.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.network]

PEERS, ROUNDS, KILLED = 8, 40, 3

CONFIG = """
[run]
name = "ring-grpc"
seed = 0
rounds = {rounds}

[task]
name = "digits"

[partition]
kind = "iid"
num_clients = {peers}

[client]
epochs = 1
batch_size = 16
lr = 0.05

[evaluation]
every = 5

[topology]
kind = "ring"
algorithm = "gossip"

[peers]
addresses = {addresses}
key_dir = "{keys}"
state_dir = "{state}"
round_timeout = 2.0
round_period = 1.5  # 40 rounds outlast a restart that takes 35 s under load
join_timeout = 60.0
"""


@pytest.fixture
def peers(peer_procs: Callable[..., Any]) -> Any:
    return peer_procs(PEERS, CONFIG, rounds=ROUNDS)


def test_ring_of_eight_survives_a_killed_peer_which_then_rejoins(peers: Any) -> None:
    for i in range(PEERS):
        peers.start(i)
    peers.wait_for(lambda: peers.last_round(KILLED) >= 2, 120, "peer 3 to finish round 2")
    peers.procs[KILLED].send_signal(signal.SIGKILL)
    peers.procs[KILLED].wait(10)
    killed_at = peers.last_round(KILLED)
    # Its neighbours notice (skip it, renormalise) and go on; then it comes back.
    peers.wait_for(
        lambda: any("peer-3" in m["missing"] for m in peers.metrics(2)),
        60,
        "peer 2 to mix without peer 3",
    )
    peers.start(KILLED)
    for i, p in peers.procs.items():
        assert p.wait(120) == 0, peers.log(i)

    for i in (2, 4):  # the neighbours finished every round, some without peer 3
        lines = peers.metrics(i)
        assert [m["round"] for m in lines] == list(range(1, ROUNDS + 1))
        skipped = [m["round"] for m in lines if "peer-3" in m["missing"]]
        assert skipped and min(skipped) > killed_at
    back = peers.metrics(KILLED)
    resumed = [m for m in back if m["round"] > killed_at]
    assert "resumed from own checkpoint" in peers.log(KILLED)
    assert resumed and resumed[-1]["round"] == ROUNDS
    # it rejoined: it mixed with both neighbours again, and they with it
    assert any(set(m["neighbours"]) == {"peer-2", "peer-4"} for m in resumed)
    late = [m for m in peers.metrics(2) if m["round"] > resumed[0]["round"]]
    assert any("peer-3" in m["neighbours"] for m in late)

    finals = [peers.metrics(i)[-1] for i in range(PEERS)]
    assert all(m["round"] == ROUNDS for m in finals)
    accs = [float(m["test_accuracy"]) for m in finals]
    assert sum(accs) / PEERS > 0.8, accs
