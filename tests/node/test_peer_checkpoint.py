"""A peer's own checkpoint: atomic, carries its run, node and round, and is resumed from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from murmura.node.peer import checkpoint_file, load_peer_checkpoint, save_peer_checkpoint
from murmura.types import Layout

LAYOUT = Layout(("a", "b"), ((3,), (2, 2)))


def test_checkpoint_round_trips_with_its_binding(tmp_path: Path) -> None:
    path = checkpoint_file(tmp_path / "peer-0")
    w = np.arange(LAYOUT.size, dtype=np.float32)
    meta = {"run_id": "r", "node": "peer-0", "round": "4"}
    save_peer_checkpoint(path, w, LAYOUT, meta)
    save_peer_checkpoint(path, w + 1, LAYOUT, {**meta, "round": "5"})
    got = load_peer_checkpoint(path, LAYOUT)
    assert got is not None
    assert got[0] == {**meta, "round": "5"}
    np.testing.assert_array_equal(got[1], w + 1)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]  # no temp left


def test_no_checkpoint_is_none(tmp_path: Path) -> None:
    assert load_peer_checkpoint(checkpoint_file(tmp_path), LAYOUT) is None
