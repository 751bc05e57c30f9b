"""A worker whose client raises says so, over mTLS with real processes: no wait for the deadline.

Three workers, a 60 s round timeout; w2's fit and evaluate raise in every round. w2 pushes a
result that carries only the error, so each round (FIT and EVALUATE phase) closes as soon as
w0 and w1 have answered, far below the timeout; w2 is listed with the exception's text, the
new model is the examples-weighted mean of w0's and w1's updates, and the audit ledger holds
the worker errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from murmura.ops.audit import LEDGER_FILE, read_records

pytestmark = [pytest.mark.slow, pytest.mark.network]

NAMES = ["w0", "w1", "w2"]
TIMEOUT_S = 60.0


def _update(out: Path, name: str, round_: int) -> tuple[np.ndarray, int]:
    n = json.loads((out / f"{name}-r{round_}.json").read_text())["n"]
    return np.load(out / f"{name}-r{round_}.npy", allow_pickle=False), int(n)


def test_a_failing_worker_is_listed_at_once(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key_dir = procs.make_keys(tmp_path / "keys", NAMES)
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    common = ["--keys", str(key_dir), "--port", str(procs.free_port())]
    coord = procs.start(
        "coordinator", "coordinator", *common, "--state", str(state), "--rounds", "2",
        "--min-clients", "2", "--min-nodes", "3", "--timeout", str(TIMEOUT_S),
        "--lost-after", "30", "--names", ",".join(NAMES), "--fraction-evaluate", "1.0",
    )  # fmt: skip
    for name in NAMES:
        fail = ["--fail"] if name == "w2" else []
        procs.start(name, "worker", *common, "--name", name, "--out", str(out), *fail)
    assert coord.wait(90) == 0, procs.log("coordinator")

    metrics = (procs.run_path(state) / "metrics.jsonl").read_text()
    lines = [json.loads(x) for x in metrics.splitlines()]
    assert [m["round"] for m in lines] == [1, 2]
    for r, line in enumerate(lines, start=1):
        # round 1 includes the workers' start-up (the coordinator waits for 3 to join)
        assert line["seconds"] < (TIMEOUT_S / 2 if r == 1 else TIMEOUT_S / 10), line["seconds"]
        assert line["participants"] == 2
        fit_error = f"RuntimeError: injected failure of w2 in round {r}"
        eval_error = "OSError: injected evaluation failure of w2"
        assert line["failures"] == [
            {"node": "w2", "reason": f"worker error: {fit_error}"},
            {"node": "w2", "reason": f"evaluate: worker error: {eval_error}"},
        ]
        assert line["federated_clients"] == 2
        ups = [_update(out, n, r) for n in ("w0", "w1")]
        weights = np.array([n for _, n in ups], dtype=np.float64)
        mean = (weights[:, None] * np.stack([u for u, _ in ups])).sum(0) / weights.sum()
        delta = procs.checkpoint(state, r) - procs.checkpoint(state, r - 1)
        np.testing.assert_allclose(delta, mean, atol=1e-6, rtol=0)
    errors = [(r.round, r.details()["kind"]) for r in read_records(state / LEDGER_FILE)
              if r.event == "worker_error" and r.node == "w2"]  # fmt: skip
    assert errors == [(1, "FIT"), (1, "EVALUATE"), (2, "FIT"), (2, "EVALUATE")]
    print("round seconds with a failing worker (timeout 60 s):", [m["seconds"] for m in lines])
