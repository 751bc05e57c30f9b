"""Coordinator SIGKILLed and restarted (evidence 4; RELIABILITY 14, 15), real processes.

The coordinator is killed once round 2 is on disk and started again on the same state
directory; the workers rejoin under their own identities; the restarted coordinator resumes
at the first round not completed. With fixed seeds the final model is bitwise the one an
uninterrupted run of the same strategy and clients gives (run in-process with the simulation
runtime, which shares no transport code with the deployment).
"""

from __future__ import annotations

import importlib.util
import json
import signal
import sqlite3
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.network]

NAMES = ["w0", "w1", "w2"]
ROUNDS = 4


def _procs_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "node_procs", Path(__file__).with_name("procs.py")
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _uninterrupted(out: Path):  # type: ignore[no-untyped-def]
    from murmura.sim.runtime import Simulation
    from murmura.strategy import FedAvg

    m = _procs_module()
    clients = []
    for name in NAMES:
        c = m.FakeClient(name, out, hang_round=-1)
        c.node_id = name
        clients.append(c)
    sim = Simulation(FedAvg(min_clients=3, seed=0), clients, m.initial_weights())
    return sim.run(ROUNDS).weights


def test_coordinator_killed_and_resumed_gives_the_same_model(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key_dir = procs.make_keys(tmp_path / "keys", NAMES)
    state, out = tmp_path / "state", tmp_path / "out"
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
    first = procs.start("coordinator", *coord_args)
    for name in NAMES:
        args = ["--name", name, "--out", str(out), "--pause-round", "3"]
        procs.start(name, "worker", *common, *args)
    expected = _uninterrupted(tmp_path)  # while the nodes start up

    # Kill it mid-round 3: rounds 1-2 are completed, every worker holds round 3's model.
    for name in NAMES:
        procs.wait_for((out / f"{name}-paused").exists, 90, f"{name} in round 3")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    restarted = procs.start("coordinator-2", *coord_args)
    (out / "release").touch()
    assert restarted.wait(90) == 0, procs.log("coordinator-2")
    assert all(procs.procs[n].wait(30) == 0 for n in NAMES)

    assert "at round 2 of" in procs.log("coordinator-2")  # resumed after 2: round 3 is redone
    final = procs.checkpoint(state, ROUNDS)
    assert final.tobytes() == expected.tobytes()
    assert final.tobytes() != procs.checkpoint(state, 0).tobytes()
    db = sqlite3.connect(state / "state.sqlite")
    rounds = db.execute("SELECT round, status, participants FROM rounds ORDER BY round").fetchall()
    assert rounds == [(r, "completed", 3) for r in range(1, ROUNDS + 1)]
    assert db.execute("SELECT COUNT(*), MIN(status) FROM runs").fetchone() == (1, "finished")
    db.close()
    logged = [
        json.loads(x)["round"]
        for x in (procs.run_path(state) / "metrics.jsonl").read_text().splitlines()
    ]
    assert sorted(set(logged)) == list(range(1, ROUNDS + 1))
