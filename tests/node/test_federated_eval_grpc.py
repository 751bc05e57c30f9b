"""Federated evaluation over gRPC with mTLS: a coordinator without a test set, 3 worker processes.

Each round, after aggregation, every worker is told to EVALUATE the new model; w0 and w1
report deterministic figures (saved to files), w2 reports a NaN loss. The metrics line must
hold the examples-weighted mean of w0's and w1's reported values, w2 as a failure with the
reason, no central figures; the workers must have evaluated exactly the round's checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.network]

NAMES = ["w0", "w1", "w2"]
ROUNDS = 2


def test_workers_evaluate_on_their_data_and_a_nan_loss_is_rejected(  # type: ignore[no-untyped-def]
    procs, tmp_path: Path
) -> None:
    key_dir = procs.make_keys(tmp_path / "keys", NAMES)
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    common = ["--keys", str(key_dir), "--port", str(procs.free_port())]
    coord = procs.start(
        "coordinator", "coordinator", *common, "--state", str(state), "--rounds", str(ROUNDS),
        "--min-clients", "3", "--min-nodes", "3", "--timeout", "30", "--names", ",".join(NAMES),
        "--fraction-evaluate", "1.0",
    )  # fmt: skip
    for name in NAMES:
        nan = ["--eval-nan"] if name == "w2" else []
        procs.start(name, "worker", *common, "--name", name, "--out", str(out), *nan)
    assert coord.wait(90) == 0, procs.log("coordinator")

    run = procs.run_path(state)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [1, 2]
    for r, line in enumerate(lines, start=1):
        assert line["participants"] == 3 and line["test_accuracy"] is None
        (failure,) = line["failures"]
        assert failure["node"] == "w2" and failure["reason"].startswith("evaluate: ")
        assert "evaluation loss nan is not a finite number" in failure["reason"]
        reported = {n: json.loads((out / f"{n}-e{r}.json").read_text()) for n in NAMES}
        weights_sum = float(procs.checkpoint(state, r).astype("float64").sum())
        assert all(e["weights_sum"] == weights_sum for e in reported.values())  # the new model
        good = [reported["w0"], reported["w1"]]
        total = sum(e["n"] for e in good)
        assert line["federated_clients"] == 2 and line["federated_examples"] == total
        acc = sum(e["n"] * e["accuracy"] for e in good) / total
        loss = sum(e["n"] * e["loss"] for e in good) / total
        assert line["federated_accuracy"] == pytest.approx(acc, rel=1e-12)
        assert line["federated_loss"] == pytest.approx(loss, rel=1e-12)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_test_accuracy"] is None
    assert summary["final_federated_accuracy"] == lines[-1]["federated_accuracy"]
    assert summary["final_federated_clients"] == 2
