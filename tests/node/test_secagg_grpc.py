"""Secure aggregation over gRPC (issue 5 evidence; RELIABILITY 21), real processes over mTLS.

10 workers run SecAgg+ with the coordinator on 127.0.0.1; 2 of them SIGKILL themselves right
after the coordinator accepted their masked inputs, so they never take part in unmasking. Their
self masks are rebuilt from the other nodes' shares, so the round still yields the weighted sum
of all 10 updates: the new model equals the initial one plus the examples-weighted mean of the
10 updates (recomputed here in-process), up to quantisation error.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from murmura.types import FitIns

pytestmark = [pytest.mark.slow, pytest.mark.network]

NAMES = [f"w{i}" for i in range(10)]
VICTIMS = {"w3", "w8"}
SCRIPT = Path(__file__).with_name("secagg_procs.py")


def _expected_mean(w0: np.ndarray, out: Path) -> np.ndarray:
    """The examples-weighted mean of the 10 FakeClient updates of round 1, computed here."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from procs import FakeClient
    finally:
        sys.path.pop(0)
    fits = [FakeClient(n, out, -1).fit(FitIns(1, w0.copy())) for n in NAMES]
    weights = np.array([f.num_examples for f in fits], dtype=np.float64)
    rows = np.stack([f.update.astype(np.float64) for f in fits])
    return (weights[:, None] * rows).sum(0) / weights.sum()


def test_secagg_round_survives_two_deaths_after_masked_input(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    key_dir = procs.make_keys(tmp_path / "keys", NAMES)
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    port = str(procs.free_port())
    common = ["--keys", str(key_dir), "--port", port]
    coord = procs.start(
        "coordinator", "coordinator", *common, "--state", str(state),
        "--min-nodes", "10", "--names", ",".join(NAMES), script=SCRIPT,
    )  # fmt: skip
    for name in NAMES:
        extra = ["--die-after-masked-input"] if name in VICTIMS else []
        procs.start(
            name, "worker", *common, "--name", name, "--out", str(out), *extra, script=SCRIPT
        )
    assert coord.wait(80) == 0, procs.log("coordinator")
    for name in VICTIMS:
        assert procs.procs[name].wait(10) == -signal.SIGKILL, procs.log(name)
        assert "dying" in procs.log(name)

    coord_log = procs.log("coordinator")
    assert "SECAGG_MASKED_INPUT closed, 10 of 10 answered" in coord_log, coord_log
    assert "SECAGG_UNMASK closed, 8 of 10 answered" in coord_log, coord_log
    db = sqlite3.connect(state / "state.sqlite")
    ((participants, failures, metrics),) = db.execute(
        "SELECT participants, failures, metrics FROM rounds WHERE round = 1"
    ).fetchall()
    assert participants == 10 and json.loads(failures) == []
    assert json.loads(metrics)["secagg_survivors"] == 10

    w0, w1 = procs.checkpoint(state, 0), procs.checkpoint(state, 1)
    expected = _expected_mean(w0, tmp_path)
    # Quantisation: 1 unit is 10 * clip * max_weight / 2^31 ~ 7e-8 of w * x per client.
    np.testing.assert_allclose(w1 - w0, expected, atol=2e-6, rtol=0)
    assert np.abs(w1 - w0).max() > 1e-2  # the model did move
    print(f"secure round over gRPC: {time.monotonic() - t0:.1f} s")
