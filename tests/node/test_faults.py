"""Workers SIGKILLed mid-round (evidence 2, 3; RELIABILITY 11, 12), real processes over mTLS.

Round 1: 2 of 6 workers are killed while training; the round completes with the 4 survivors
(>= min_clients = 3) and the new model equals the initial one plus the examples-weighted mean
of the survivors' updates, to 1e-6; the killed ids are the round's failures. Round 2: 2 more
are killed, 2 survive (< 3): the model stays bitwise unchanged.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.network]

NAMES = [f"w{i}" for i in range(6)]
HANG = {"w4": 1, "w5": 1, "w2": 2, "w3": 2}


def _update(out: Path, name: str, round_: int) -> tuple[np.ndarray, int]:
    n = json.loads((out / f"{name}-r{round_}.json").read_text())["n"]
    return np.load(out / f"{name}-r{round_}.npy", allow_pickle=False), int(n)


def test_killed_workers(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key_dir = procs.make_keys(tmp_path / "keys", NAMES)
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    port = str(procs.free_port())
    common = ["--keys", str(key_dir), "--port", port]
    coord = procs.start(
        "coordinator",
        "coordinator",
        *common,
        "--state",
        str(state),
        "--rounds",
        "2",
        "--min-clients",
        "3",
        "--min-nodes",
        "6",
        "--timeout",
        "60",
        "--lost-after",
        "1.5",
        "--names",
        ",".join(NAMES),
    )
    for name in NAMES:
        procs.start(
            name,
            "worker",
            *common,
            "--name",
            name,
            "--out",
            str(out),
            "--hang-round",
            str(HANG.get(name, -1)),
        )
    for round_ in (1, 2):
        victims = [n for n, r in HANG.items() if r == round_]
        for v in victims:
            flag = out / f"{v}-hang-{round_}"
            procs.wait_for(flag.exists, 60, f"{v} to start training")
            procs.procs[v].send_signal(signal.SIGKILL)
    assert coord.wait(60) == 0, procs.log("coordinator")

    db = sqlite3.connect(state / "state.sqlite")
    rows = {
        r: (p, json.loads(f))
        for r, p, f in db.execute("SELECT round, participants, failures FROM rounds")
    }
    # Round 1: survivors' weighted mean, killed ids listed with a reason.
    survivors = ["w0", "w1", "w2", "w3"]
    ups = [_update(out, n, 1) for n in survivors]
    weights = np.array([n for _, n in ups], dtype=np.float64)
    mean = (weights[:, None] * np.stack([u for u, _ in ups])).sum(0) / weights.sum()
    w0, w1 = procs.checkpoint(state, 0), procs.checkpoint(state, 1)
    np.testing.assert_allclose(w1 - w0, mean, atol=1e-6, rtol=0)
    assert rows[1][0] == 4
    assert {f["node"] for f in rows[1][1]} == {"w4", "w5"}
    assert all("lost" in f["reason"] for f in rows[1][1])
    # Round 2: 2 survivors < min_clients 3 -> bitwise unchanged.
    assert rows[2][0] == 2
    assert {f["node"] for f in rows[2][1]} == {"w2", "w3"}
    assert procs.checkpoint(state, 2).tobytes() == w1.tobytes()
