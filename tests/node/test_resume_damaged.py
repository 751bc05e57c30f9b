"""A flipped byte in the latest checkpoint after a SIGKILL (RELIABILITY 25), real processes.

The coordinator is killed in round 3 (rounds 1-2 on disk), one bit of the first weight of
``round-00002.safetensors`` is flipped, and the coordinator is started again. It must not
resume with the changed weight: it names the file in a warning, sets it aside as
``*.damaged`` and resumes from round 1, so the final model is bitwise the one an
uninterrupted run gives (before the fix it resumed from round 2 with the weight negated).
"""

from __future__ import annotations

import importlib.util
import json
import signal
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.network]


def _resume_test():  # type: ignore[no-untyped-def]
    """The plain resume test's module: its names, rounds and uninterrupted reference run."""
    spec = importlib.util.spec_from_file_location(
        "node_test_resume", Path(__file__).with_name("test_resume.py")
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


R = _resume_test()
NAMES, ROUNDS = R.NAMES, R.ROUNDS


def flip_first_weight_sign(path: Path) -> tuple[float, float]:
    """Flip the sign bit of tensor ``a``'s first float32 in place; (before, after)."""
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    start = 8 + n + json.loads(raw[8 : 8 + n])["a"]["data_offsets"][0]
    before = struct.unpack("<f", raw[start : start + 4])[0]
    raw[start + 3] ^= 0x80
    path.write_bytes(bytes(raw))
    return before, struct.unpack("<f", raw[start : start + 4])[0]


def test_a_flipped_byte_in_the_latest_checkpoint_is_not_resumed(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key_dir = procs.make_keys(tmp_path / "keys", NAMES)
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    common = ["--keys", str(key_dir), "--port", str(procs.free_port())]
    coord_args = [
        "coordinator", *common, "--state", str(state), "--rounds", str(ROUNDS),
        "--min-clients", "3", "--min-nodes", "3", "--names", ",".join(NAMES),
    ]  # fmt: skip
    first = procs.start("coordinator", *coord_args)
    for name in NAMES:
        args = ["--name", name, "--out", str(out), "--pause-round", "3"]
        procs.start(name, "worker", *common, *args)
    expected = R._uninterrupted(tmp_path)
    for name in NAMES:
        procs.wait_for((out / f"{name}-paused").exists, 90, f"{name} in round 3")
    first.send_signal(signal.SIGKILL)
    first.wait(10)

    latest = procs.run_path(state) / "checkpoints" / "round-00002.safetensors"
    round2 = procs.checkpoint(state, 2)
    before, after = flip_first_weight_sign(latest)
    assert after == -before != 0.0 and before == round2[0]
    restarted = procs.start("coordinator-2", *coord_args)
    (out / "release").touch()
    assert restarted.wait(90) == 0, procs.log("coordinator-2")
    assert all(procs.procs[n].wait(30) == 0 for n in NAMES)

    final = procs.checkpoint(state, ROUNDS)
    diff = float(np.abs(final - expected).max())
    print(f"a[0] of round 2: {before} flipped to {after}; final model off by {diff}")
    assert final.tobytes() == expected.tobytes(), f"resumed from a[0] = {after}: off by {diff}"
    log = procs.log("coordinator-2")
    assert f"round=2: damaged checkpoint: {latest}: its content does not match the SHA-256" in log
    assert "at round 1 of" in log and "resumed run" in log  # rounds 2 and 3 are run again
    assert latest.with_name("round-00002.safetensors.damaged").exists()
    assert procs.checkpoint(state, 2).tobytes() == round2.tobytes()  # redone, same as before
    db = sqlite3.connect(state / "state.sqlite")
    rounds = db.execute("SELECT round, status FROM rounds ORDER BY round").fetchall()
    assert rounds == [(r, "completed") for r in range(1, ROUNDS + 1)]
    db.close()
    logged = [
        json.loads(x)["round"]
        for x in (procs.run_path(state) / "metrics.jsonl").read_text().splitlines()
    ]
    assert logged == list(range(1, ROUNDS + 1))  # round 2's first line was dropped
    assert np.isfinite(final).all()
