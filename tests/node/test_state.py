"""The coordinator's SQLite state and atomic checkpoints (RELIABILITY 14, 15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from murmura.node.checkpoint import checkpoint_path, load_checkpoint, write_checkpoint
from murmura.node.state import StateStore
from murmura.types import Layout


def test_resume_points_at_the_last_completed_round(tmp_path: Path) -> None:
    db = StateStore(tmp_path / "s.sqlite")
    rec = db.open_run("demo", "demo-1", {"a": 1})
    assert (rec.run_id, rec.last_round) == ("demo-1", 0)
    for r in (1, 2):
        db.start_round("demo-1", r)
        db.complete_round(
            "demo-1",
            r,
            participants=3,
            failures=[],
            checkpoint=f"c{r}",
            model_sha256="x",
            metrics={"round": r},
        )
    db.start_round("demo-1", 3)  # interrupted
    db.close()
    db = StateStore(tmp_path / "s.sqlite")
    rec = db.open_run("demo", "demo-2", {"a": 1})
    assert (rec.run_id, rec.last_round, rec.checkpoint) == ("demo-1", 2, "c2")
    db.finish_run("demo-1")
    assert db.open_run("demo", "demo-3", {}).run_id == "demo-3"  # finished runs are not resumed
    db.close()


def test_checkpoints_are_atomic_and_exact(tmp_path: Path) -> None:
    layout = Layout(("a", "b"), ((3, 2), (4,)))
    w = np.random.default_rng(0).standard_normal(layout.size).astype(np.float32)
    path = checkpoint_path(tmp_path, 1)
    digest = write_checkpoint(path, w, layout)
    assert load_checkpoint(path, layout).tobytes() == w.tobytes()
    assert len(digest) == 64
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
