"""Coordinator SIGKILLed and restarted (evidence 4; RELIABILITY 14, 15), real processes.

Two runs side by side with the same seeds: one uninterrupted, one whose coordinator is killed
once round 2 is on disk and started again on the same state directory. The workers rejoin
under their own identities; the restarted coordinator resumes at the first round not completed
and the final model is bitwise the uninterrupted one.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.network]

NAMES = ["w0", "w1", "w2"]
ROUNDS = 4


def _start(procs, tmp: Path, label: str) -> tuple[list[str], Path, Path]:  # type: ignore[no-untyped-def]
    key_dir = procs.make_keys(tmp / f"keys-{label}", NAMES)
    state, out = tmp / f"state-{label}", tmp / f"out-{label}"
    out.mkdir()
    common = ["--keys", str(key_dir), "--port", str(procs.free_port())]
    coord_args = [
        "coordinator",
        *common,
        "--state",
        str(state),
        "--rounds",
        str(ROUNDS),
        "--min-clients",
        "3",
        "--min-nodes",
        "3",
        "--names",
        ",".join(NAMES),
    ]
    procs.start(f"{label}-coordinator", *coord_args)
    for name in NAMES:
        procs.start(f"{label}-{name}", "worker", *common, "--name", name, "--out", str(out))
    return coord_args, state, out


def test_coordinator_killed_and_resumed_gives_the_same_model(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, state_a, _ = _start(procs, tmp_path, "a")
    args_b, state_b, _ = _start(procs, tmp_path, "b")
    ckpt2 = state_b / "checkpoints" / "round-00002.safetensors"
    procs.wait_for(ckpt2.exists, 90, "round 2 of run b")
    procs.procs["b-coordinator"].send_signal(signal.SIGKILL)
    procs.procs["b-coordinator"].wait(10)
    restarted = procs.start("b-coordinator-2", *args_b)

    assert procs.procs["a-coordinator"].wait(90) == 0, procs.log("a-coordinator")
    assert restarted.wait(90) == 0, procs.log("b-coordinator-2")
    assert "resuming run" in procs.log("b-coordinator-2")
    final_a, final_b = procs.checkpoint(state_a, ROUNDS), procs.checkpoint(state_b, ROUNDS)
    assert final_b.tobytes() == final_a.tobytes()
    assert final_a.tobytes() != procs.checkpoint(state_a, 0).tobytes()

    db = sqlite3.connect(state_b / "state.sqlite")
    rounds = db.execute("SELECT round, status, participants FROM rounds ORDER BY round").fetchall()
    assert rounds == [(r, "completed", 3) for r in range(1, ROUNDS + 1)]
    assert db.execute("SELECT COUNT(*), MIN(status) FROM runs").fetchone() == (1, "finished")
    logged = [json.loads(x)["round"] for x in (state_b / "metrics.jsonl").read_text().splitlines()]
    assert sorted(set(logged)) == list(range(1, ROUNDS + 1))
    db.close()
