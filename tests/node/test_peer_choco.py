"""A deployed CHOCO-gossip peer keeps its public copies whole: it refuses what would break
them, saying why, and resumes with them from its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from murmura.compress.choco import PeerCopies
from murmura.errors import CheckpointError, ConfigError
from murmura.node.peer import SENT_Q, STALE, checkpoint_file, save_peer_checkpoint
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


def test_a_peer_that_misses_a_neighbour_s_difference_mixes_it_again_once_resynced(
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
    peer._choco_mix(2, trained, {1: q})  # still missing: still stale
    np.testing.assert_array_equal(peer.choco.public[2], peer.weights)
    copy = np.full(d, 0.7, dtype=np.float32)  # what peer 2 holds as its own public copy
    mixed = peer._choco_mix(3, trained, {1: q, 2: copy})  # asked for the copy: a resync
    assert peer.stale == set()
    np.testing.assert_array_equal(peer.choco.public[2], copy)
    twin.receive(1, q)
    twin.receive(1, q)
    twin.public[2] = copy
    np.testing.assert_array_equal(mixed, twin.mix(trained, [1, 2]))  # mixed again


def test_a_choco_peer_resumes_with_its_copies_and_stale_set(tmp_path: Path) -> None:
    peer = build_peer(_config(tmp_path), 0, insecure=True)
    assert peer.choco is not None
    d = peer.weights.size
    trained = peer.weights + 0.1
    peer.choco.encode(1, trained)
    peer._choco_mix(1, trained, {1: np.full(d, 0.2, dtype=np.float32)})  # 2's q missed
    peer.weights = trained
    meta = {"run_id": "choco", "node": "peer-0", "round": "1", STALE: json.dumps([2])}
    peer.s.state_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_file(peer.s.state_dir)
    sent = {SENT_Q: np.frombuffer(b"MZC1 q", dtype=np.uint8)}  # served again on resume
    save_peer_checkpoint(path, peer.weights, peer.layout, meta, {**peer.choco.tensors(), **sent})

    again = build_peer(_config(tmp_path), 0, insecure=True)
    assert again.choco is not None and again._resume() == 1
    assert again.stale == {2} and again.sent_q == b"MZC1 q"
    np.testing.assert_array_equal(again.weights, trained)
    for j in (0, 1, 2):
        np.testing.assert_array_equal(again.choco.public[j], peer.choco.public[j])
    assert not np.array_equal(again.choco.public[1], again.choco.public[2])  # not the start
    q = np.full(d, 0.3, dtype=np.float32)  # both go on with the same round
    peer.choco.encode(2, trained + 0.1)
    again.choco.encode(2, trained + 0.1)
    np.testing.assert_array_equal(
        peer._choco_mix(2, trained, {1: q, 2: q}), again._choco_mix(2, trained, {1: q, 2: q})
    )

    save_peer_checkpoint(path, peer.weights, peer.layout, meta)  # a model without the copies
    with pytest.raises(CheckpointError, match="lacks CHOCO-gossip's public copy of peer 0"):
        build_peer(_config(tmp_path), 0, insecure=True)._resume()


def test_a_red_team_peer_is_refused_with_choco(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--attack with \\[compression\\] uplink"):
        build_peer(_config(tmp_path), 0, insecure=True, attack=RedTeam("gaussian"))
