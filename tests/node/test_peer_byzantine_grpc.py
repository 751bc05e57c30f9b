"""A red-team peer over mTLS gRPC: plain gossip is driven off, clipped gossip holds.

Two rings of 6 peers run side by side, each peer its own process (``murmura peer CONFIG
--id K``) with its own certificate; in both, peer 0 is started with ``--attack gaussian
--attack-arg std=100`` and sends N(0, 100^2) noise around its model every round through the
same protocol. With ``robust = "none"`` the honest peers' models are blown up and their
accuracy falls to chance; with ``robust = "clipped"`` they stay together and accurate (an
all-honest ring reaches about 0.9 on digits, ``test_peer_grpc.py`` asserts > 0.8).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest
from safetensors.numpy import load_file

from murmura.transport import keys

pytestmark = [pytest.mark.slow, pytest.mark.network]

PEERS, ROUNDS, ATTACKER = 6, 8, 0
HONEST = [i for i in range(PEERS) if i != ATTACKER]

CONFIG = """
[run]
name = "byz-{robust}"
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
every = {rounds}

[topology]
kind = "ring"
algorithm = "gossip"
robust = "{robust}"
clip_weight = 0.5

[peers]
addresses = {addresses}
key_dir = "{keys}"
state_dir = "{state}"
round_timeout = 10.0
join_timeout = 90.0
"""


class Ring:
    """One ring of peer processes; peer ``ATTACKER`` is started with ``--attack``."""

    def __init__(self, tmp: Path, key_dir: Path, robust: str, ports: list[int]) -> None:
        self.tmp, self.state = tmp / robust, tmp / robust / "state"
        self.tmp.mkdir()
        self.config = self.tmp / "ring.toml"
        self.config.write_text(
            CONFIG.format(
                robust=robust,
                rounds=ROUNDS,
                peers=PEERS,
                addresses=json.dumps([f"127.0.0.1:{p}" for p in ports]),
                keys=key_dir,
                state=self.state,
            )
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[BinaryIO] = []

    def start(self) -> None:
        for i in range(PEERS):
            log = open(self.tmp / f"peer-{i}.log", "wb")
            self.logs.append(log)
            cmd = [sys.executable, "-m", "murmura.node.topology_cli", "peer", str(self.config)]
            cmd += ["--id", str(i)]
            if i == ATTACKER:
                cmd += ["--attack", "gaussian", "--attack-arg", "std=100"]
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))

    def wait(self, timeout: float) -> None:
        for i, p in enumerate(self.procs):
            assert p.wait(timeout) == 0, self.log(i)

    def log(self, i: int) -> str:
        return (self.tmp / f"peer-{i}.log").read_text(errors="replace")

    def final(self, i: int) -> dict[str, Any]:
        path = self.state / f"peer-{i}" / "metrics.jsonl"
        return dict(json.loads(path.read_text().splitlines()[-1]))

    def model(self, i: int) -> np.ndarray:
        tensors = load_file(str(self.state / f"peer-{i}" / "model.safetensors"))
        return np.concatenate([tensors[k].ravel() for k in sorted(tensors)]).astype(np.float64)

    def honest_figures(self) -> tuple[list[float], float, float]:
        """Honest peers' final accuracies, mean test loss, largest distance from their mean."""
        models = np.stack([self.model(i) for i in HONEST])
        spread = float(np.linalg.norm(models - models.mean(axis=0), axis=1).max())
        finals = [self.final(i) for i in HONEST]
        loss = sum(float(m["test_loss"]) for m in finals) / len(finals)
        return [float(m["test_accuracy"]) for m in finals], loss, spread

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for log in self.logs:
            log.close()


@pytest.fixture
def rings(tmp_path: Path, ports: Callable[[int], list[int]]) -> Iterator[dict[str, Ring]]:
    key_dir = tmp_path / "keys"
    keys.init_ca(key_dir)
    for i in range(PEERS):
        keys.issue(key_dir, f"peer-{i}", "worker")
    free = ports(2 * PEERS)
    out = {
        "none": Ring(tmp_path, key_dir, "none", free[:PEERS]),
        "clipped": Ring(tmp_path, key_dir, "clipped", free[PEERS:]),
    }
    try:
        yield out
    finally:
        for ring in out.values():
            ring.stop()


def test_clipped_gossip_holds_against_a_gaussian_peer_that_plain_gossip_does_not(
    rings: dict[str, Ring],
) -> None:
    for ring in rings.values():
        ring.start()
    for ring in rings.values():
        ring.wait(180)
    for ring in rings.values():
        assert "RED-TEAM PEER: attack gaussian" in ring.log(ATTACKER)
        assert "ATTACKING (gaussian)" in ring.log(ATTACKER)
        assert all(ring.final(i)["round"] == ROUNDS for i in range(PEERS))
        assert all(not ring.final(i)["missing"] for i in range(PEERS))

    plain_acc, plain_loss, plain_spread = rings["none"].honest_figures()
    robust_acc, robust_loss, robust_spread = rings["clipped"].honest_figures()
    print(f"plain: acc {plain_acc} loss {plain_loss:.3g} spread {plain_spread:.3g}")
    print(f"clipped: acc {robust_acc} loss {robust_loss:.3g} spread {robust_spread:.3g}")
    # Plain gossip: the honest models are thousands of units apart (a clean one has norm ~6),
    # and the attacker's neighbours are near chance.
    assert plain_spread > 100 and plain_loss > 100 and min(plain_acc) < 0.5
    # Clipped gossip: the honest peers agree and are as accurate as an all-honest ring.
    assert robust_spread < 2 and robust_loss < 1 and min(robust_acc) > 0.8
