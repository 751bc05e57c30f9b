"""A peer's own checkpoint: atomic, carries its run, node and round, is resumed from when it
verifies and set aside when it does not."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from murmura.errors import CheckpointError
from murmura.node.peer import checkpoint_file, read_peer_checkpoint, save_peer_checkpoint
from murmura.types import Layout

LAYOUT = Layout(("a", "b"), ((3,), (2, 2)))


def test_checkpoint_round_trips_with_its_binding(tmp_path: Path) -> None:
    path = checkpoint_file(tmp_path / "peer-0")
    w = np.arange(LAYOUT.size, dtype=np.float32)
    meta = {"run_id": "r", "node": "peer-0", "round": "4"}
    save_peer_checkpoint(path, w, LAYOUT, meta)
    save_peer_checkpoint(path, w + 1, LAYOUT, {**meta, "round": "5"})
    got = read_peer_checkpoint(path, LAYOUT)
    assert got is not None
    assert got[0] == {**meta, "round": "5"}
    np.testing.assert_array_equal(got[1], w + 1)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]  # no temp left


def test_no_checkpoint_is_none(tmp_path: Path) -> None:
    assert read_peer_checkpoint(checkpoint_file(tmp_path), LAYOUT) is None


def test_a_damaged_checkpoint_is_set_aside_and_not_resumed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from murmura.node.peer import Peer, PeerSettings

    path = checkpoint_file(tmp_path)
    w = np.arange(LAYOUT.size, dtype=np.float32)
    save_peer_checkpoint(path, w + 1, LAYOUT, {"run_id": "r", "node": "p0", "round": "4"})
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x80  # the sign of the last weight
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="does not match the SHA-256 it was written with"):
        read_peer_checkpoint(path, LAYOUT)
    orphan = tmp_path / ".model.safetensors.99.tmp"
    orphan.write_bytes(b"half")

    settings = PeerSettings(0, ["p0"], ["127.0.0.1:1"], "r", tmp_path)
    peer = Peer(settings, None, w, LAYOUT, {0: 1.0}, None)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        assert peer._resume() == 0
    assert peer.weights.tobytes() == w.tobytes()  # the initial model, not the damaged one
    assert f"damaged checkpoint: {path}: its content" in caplog.text
    assert f"removed {orphan}" in caplog.text and not orphan.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors.damaged"]
