"""FedBuff over gRPC with a straggler, and a coordinator SIGKILLed with a half-full buffer.

Real processes over mTLS on 127.0.0.1 (``async_procs.py``): buffer_size 2, staleness
``(1 + s)^-1/2``, max_staleness 3. w0 (5 fits) and w1 (4 fits) are fast; w2's first fit
waits until they are done. Their 9 updates make aggregations 1 to 4 without w2 (nobody waits
for it) and leave one update buffered for aggregation 5. w2's update, computed on model 0,
then arrives at staleness 4 and is refused with the reason. The coordinator is SIGKILLed;
a new one resumes the run with that update buffered, fresh workers finish rounds 5 and 6.
Every round's model is recomputed from the workers' saved updates and the staleness the
metrics report; each update counts in exactly one round.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.network]

SCRIPT = Path(__file__).with_name("async_procs.py")
NAMES = ["w0", "w1", "w2"]
STALE = "stale: staleness 4 > clock.max_staleness 3"


def _rows(state: Path) -> list[tuple[str, int, str | None, int | None]]:
    with sqlite3.connect(state / "state.sqlite") as db:
        return db.execute("SELECT node, ticket, reason, round FROM async_arrivals").fetchall()


def _rounds(procs, state: Path) -> dict[int, dict[str, object]]:  # type: ignore[no-untyped-def]
    path = procs.run_path(state) / "metrics.jsonl"
    if not path.exists():
        return {}
    lines = [json.loads(line) for line in path.read_text().splitlines() if line]
    return {m["round"]: m for m in lines}  # a redone round's line counts once, the last


def _expected(out: Path, before: np.ndarray, updates: list[dict[str, object]]) -> np.ndarray:
    """FedAvg of the round's updates, each scaled by (1 + staleness)^-1/2."""
    total, acc = 0.0, np.zeros(before.size, dtype=np.float64)
    for u in updates:
        stem = f"{u['node']}-r{u['ticket']}"
        n = json.loads((out / f"{stem}.json").read_text())["n"]
        delta = np.load(out / f"{stem}.npy", allow_pickle=False).astype(np.float64)
        acc += n * delta * (1.0 + float(u["staleness"])) ** -0.5  # type: ignore[arg-type]
        total += n
    return before + acc / total


def test_fedbuff_straggler_and_killed_coordinator(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key_dir = procs.make_keys(tmp_path / "keys", NAMES)
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    port = str(procs.free_port())
    common = ["--keys", str(key_dir), "--port", port]
    coord_args = [
        "coordinator", *common, "--state", str(state), "--rounds", "6", "--buffer-size", "2",
        "--max-staleness", "3", "--names", ",".join(NAMES),
    ]  # fmt: skip
    first = procs.start("coordinator-1", *coord_args, script=SCRIPT)
    paced = {"w0": ["--max-fits", "5"], "w1": ["--max-fits", "4", "--delay", "0.15"]}
    paced["w2"] = ["--max-fits", "1", "--pause-first"]
    for name in NAMES:
        args = ["worker", *common, "--name", name, "--out", str(out), "--delay", "0.05"]
        procs.start(f"{name}-1", *args, *paced[name], script=SCRIPT)

    # the fast workers are done: 4 aggregations without w2, one update buffered for the 5th
    procs.wait_for(
        lambda: all((out / f"{n}-hung").exists() for n in ("w0", "w1")), 60, "fast workers"
    )
    procs.wait_for(lambda: len(_rounds(procs, state)) == 4, 20, "4 aggregations")
    assert (out / "w2-paused").exists() and not (out / "w2-hung").exists()
    (out / "release-w2").touch()
    procs.wait_for(
        lambda: any(r[0] == "w2" and r[2] == STALE for r in _rows(state)), 30, "w2 refused"
    )
    buffered = [r for r in _rows(state) if r[2] is None]
    assert len(buffered) == 1 and buffered[0][0] in ("w0", "w1"), buffered
    kept = (buffered[0][0], buffered[0][1])
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    for name in NAMES:
        procs.procs[f"{name}-1"].kill()
    assert len(_rounds(procs, state)) == 4

    second = procs.start("coordinator-2", *coord_args, script=SCRIPT)
    for name in NAMES:
        args = ["worker", *common, "--name", name, "--out", str(out), "--delay", "0.05"]
        procs.start(f"{name}-2", *args, script=SCRIPT)
    assert second.wait(60) == 0, procs.log("coordinator-2")

    rounds = _rounds(procs, state)
    assert sorted(rounds) == [1, 2, 3, 4, 5, 6]
    counted = [(u["node"], u["ticket"]) for r in rounds.values() for u in r["updates"]]
    assert len(counted) == len(set(counted)) == 12  # 6 x buffer_size, none twice
    assert kept in [(u["node"], u["ticket"]) for u in rounds[5]["updates"]]
    early = [u for r in range(1, 5) for u in rounds[r]["updates"]]
    assert {u["node"] for u in early} == {"w0", "w1"}  # nobody waited for w2
    assert any(u["staleness"] > 0 for r in rounds.values() for u in r["updates"])
    failures = [(r, f["node"], f["reason"]) for r, m in rounds.items() for f in m["failures"]]
    assert failures == [(5, "w2", STALE)]
    model = procs.checkpoint(state, 0).astype(np.float64)
    for r in range(1, 7):
        model = _expected(out, model, rounds[r]["updates"])
        np.testing.assert_allclose(procs.checkpoint(state, r), model, atol=1e-5)
        model = procs.checkpoint(state, r).astype(np.float64)
    assert _rows(state) == []  # a finished run's buffer is emptied
    with sqlite3.connect(state / "audit.sqlite") as db:
        refused = db.execute(
            "SELECT node, round FROM ledger WHERE event = 'update_rejected'"
        ).fetchall()
    assert refused == [("w2", 5)]
