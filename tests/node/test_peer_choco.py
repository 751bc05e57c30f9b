"""A deployed CHOCO-gossip peer refuses what would break its public copies, and says why."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from murmura.compress.choco import PeerCopies
from murmura.errors import CheckpointError, ConfigError
from murmura.node.peer import checkpoint_file, save_peer_checkpoint
from murmura.node.topology_deploy import RedTeam, build_peer


def _config(tmp: Path) -> Path:
    run = {
        "run": {"name": "choco", "rounds": 2, "seed": 1},
        "task": {"name": "digits"},
        "partition": {"kind": "iid", "num_clients": 3},
        "topology": {"kind": "ring"},
        "compression": {"uplink": "sign", "gossip_step": 0.5},
        "peers": {
            "addresses": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
            "state_dir": str(tmp / "s"),
        },
    }
    path = tmp / "ring.toml"
    path.write_text(tomli_w.dumps(run))
    return path


def test_a_peer_that_misses_a_neighbour_s_difference_never_mixes_its_stale_copy(
    tmp_path: Path,
) -> None:
    peer = build_peer(_config(tmp_path), 0, insecure=True)
    assert isinstance(peer.choco, PeerCopies) and peer.neighbours == [1, 2]
    d = peer.weights.size
    trained = peer.weights + 0.1
    peer.choco.encode(1, trained)
    q = np.full(d, 0.2, dtype=np.float32)
    mixed = peer._choco_mix(1, trained, {1: q})  # peer 2's q of round 1 never came
    assert peer.stale == {2}
    twin = PeerCopies(peer.choco.codec, peer.weights, 0.5, 1, 0, peer.row)
    twin.encode(1, trained)
    twin.receive(1, q)
    np.testing.assert_array_equal(mixed, twin.mix(trained, [1]))
    assert not np.array_equal(mixed, twin.mix(trained, [1, 2]))
    peer._choco_mix(2, trained, {1: q, 2: q})  # a late q of a stale copy is not applied
    np.testing.assert_array_equal(peer.choco.public[2], peer.weights)


def test_a_choco_peer_does_not_resume_from_a_checkpoint(tmp_path: Path) -> None:
    peer = build_peer(_config(tmp_path), 0, insecure=True)
    meta = {"run_id": "choco", "node": "peer-0", "round": "1"}
    peer.s.state_dir.mkdir(parents=True, exist_ok=True)
    save_peer_checkpoint(checkpoint_file(peer.s.state_dir), peer.weights, peer.layout, meta)
    with pytest.raises(CheckpointError, match="CHOCO-gossip peer cannot resume"):
        asyncio.run(peer.run())


def test_a_red_team_peer_is_refused_with_choco(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--attack with \\[compression\\] uplink"):
        build_peer(_config(tmp_path), 0, insecure=True, attack=RedTeam("gaussian"))
