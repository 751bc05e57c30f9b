"""Every worker SIGKILLed mid-run (issue 11, defect 2), real processes over mTLS.

A round with too few live nodes is never started: the coordinator waits for nodes to come
back instead of burning the remaining rounds ("cannot sample: 0 nodes"), and the run goes on
when they do. Past ``[server] rejoin_timeout`` ``murmura server`` exits 2 with one line that
says what happened, and leaves the run unfinished: started again, it resumes the same run.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.network]

NAMES = ["w0", "w1"]


def _rounds(state: Path) -> dict[int, tuple[str, int]]:
    """Every recorded round: (status, participants)."""
    db = sqlite3.connect(state / "state.sqlite")
    try:
        rows = db.execute("SELECT round, status, participants FROM rounds").fetchall()
    finally:
        db.close()
    return {int(r): (str(s), int(p)) for r, s, p in rows}


def _runs(state: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(state / "state.sqlite")
    try:
        return [(str(r), str(s)) for r, s in db.execute("SELECT run_id, status FROM runs")]
    finally:
        db.close()


def _start_workers(procs, common: list[str], out: Path, label: str, *extra: str) -> None:  # type: ignore[no-untyped-def]
    for name in NAMES:
        procs.start(f"{name}-{label}", "worker", *common, "--name", name, "--out", str(out), *extra)


def _kill_workers_in_round(procs, out: Path, round_: int) -> float:  # type: ignore[no-untyped-def]
    """SIGKILL every worker once all hold ``round_``'s model (rounds before it completed)."""
    for name in NAMES:
        procs.wait_for((out / f"{name}-paused").exists, 60, f"{name} in round {round_}")
    for name in NAMES:
        procs.procs[f"{name}-1"].send_signal(signal.SIGKILL)
        procs.procs[f"{name}-1"].wait(10)
    return time.monotonic()


def test_coordinator_waits_for_killed_workers_and_the_run_goes_on(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rounds = 30
    key_dir = procs.make_keys(tmp_path / "keys", NAMES)
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    common = ["--keys", str(key_dir), "--port", str(procs.free_port())]
    coord = procs.start(
        "coordinator", "coordinator", *common, "--state", str(state),
        "--rounds", str(rounds), "--min-clients", "2", "--min-nodes", "2",
        "--lost-after", "1.5", "--names", ",".join(NAMES),
    )  # fmt: skip
    _start_workers(procs, common, out, "1", "--pause-round", "4")
    _kill_workers_in_round(procs, out, 4)  # rounds 1-3 completed, round 4 sampled

    # Round 4 ends once its cohort is lost (1.5 s); no later round may start without workers.
    procs.wait_for(lambda: _rounds(state).get(4, ("",))[0] == "completed", 30, "round 4 closed")
    time.sleep(3.0)
    recorded = _rounds(state)
    burnt = sorted(r for r in recorded if r > 4)
    assert coord.poll() is None and not burnt, (
        f"coordinator exit {coord.poll()}; rounds recorded after every worker was lost: "
        f"{len(burnt)} {burnt[:3]}...\n{procs.log('coordinator')[-2000:]}"
    )
    assert {r: recorded[r] for r in (1, 2, 3)} == {r: ("completed", 2) for r in (1, 2, 3)}
    assert recorded[4] == ("completed", 0)  # sampled while alive, lost while training
    assert "waiting up to 600 s for nodes to rejoin" in procs.log("coordinator")

    _start_workers(procs, common, out, "2")  # the same identities come back
    assert coord.wait(60) == 0, procs.log("coordinator")[-3000:]
    recorded = _rounds(state)
    assert sorted(recorded) == list(range(1, rounds + 1))
    assert all(recorded[r] == ("completed", 2) for r in range(5, rounds + 1)), recorded
    assert [s for _, s in _runs(state)] == ["finished"]
    metrics = (procs.run_path(state) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["round"] for m in metrics] == list(range(1, rounds + 1))


def _server(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)


def _log(path: Path) -> str:
    return path.read_text(errors="replace")


RUN = """
[run]
name = "rejoin"
seed = 0
rounds = 6

[task]
name = "digits"

[partition]
num_clients = 2

[strategy]
name = "fedavg"
fraction = 1.0
min_clients = 2

[evaluation]
every = 0

[server]
port = {port}
cert = "{keys}/coordinator.pem"
key = "{keys}/coordinator.key"
ca = "{keys}/ca.pem"
allowlist = ["w0", "w1"]
state_dir = "{state}"
min_nodes = 2
lost_after = 2.0
heartbeat = 0.3
rejoin_timeout = 1.5
"""


def test_rejoin_timeout_exits_2_and_leaves_the_run_resumable(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key_dir = procs.make_keys(tmp_path / "keys", NAMES)
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    port = procs.free_port()
    config = tmp_path / "server.toml"
    config.write_text(RUN.format(port=port, keys=key_dir, state=state))
    server = [sys.executable, "-m", "murmura.node.cli", "server", str(config)]
    common = ["--keys", str(key_dir), "--port", str(port)]

    first = _server(server, tmp_path / "server-1.log")
    _start_workers(procs, common, out, "1", "--pause-round", "3")
    _kill_workers_in_round(procs, out, 3)
    assert first.wait(60) == 2, _log(tmp_path / "server-1.log")
    output = _log(tmp_path / "server-1.log")
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "cannot sample round 4" in errors[0] and "no live nodes" in errors[0]
    assert "[server] rejoin_timeout = 1.5 s" in errors[0]
    assert "start the coordinator again to resume it" in errors[0]
    # Left resumable: the run is not finished and round 4 was never started.
    ((run_id, status),) = _runs(state)
    assert status == "running" and f"run {run_id}" in errors[0]
    assert _rounds(state) == {1: ("completed", 2), 2: ("completed", 2), 3: ("completed", 0)}

    second = _server(server, tmp_path / "server-2.log")
    _start_workers(procs, common, out, "2")
    assert second.wait(90) == 0, _log(tmp_path / "server-2.log")
    stdout = _log(tmp_path / "server-2.log")
    assert f"run {run_id}: 3 rounds in this process" in stdout
    assert _runs(state) == [(run_id, "finished")]
    recorded = _rounds(state)
    assert sorted(recorded) == list(range(1, 7))
    assert all(recorded[r] == ("completed", 2) for r in (4, 5, 6)), recorded
