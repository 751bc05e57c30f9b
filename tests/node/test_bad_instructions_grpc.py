"""A worker stays up through a malicious coordinator's instructions (issue 11, defect 5).

A real ``murmura client`` process (digits, partition 0/2) under mTLS serves a coordinator that
sends, in rounds 1-4, a 1-element model, a model with a NaN, ``lr = NaN`` and
``epochs = 10**9``, then a good round 5. Before the fix the worker broadcast the 1-element
model into every parameter, trained, and died in the push; a NaN model or lr trained and
pushed NaN. Now each bad round is answered at once with a worker error that names the
problem, and round 5's update is exactly what the same client computes in this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from murmura.transport import keys

pytestmark = [pytest.mark.slow, pytest.mark.network]

EVIL = Path(__file__).with_name("evil_coordinator.py")
TIMEOUT_S = 30.0
REASONS = {
    1: "model has 1 values, the task's model has",
    2: "model has 1 non-finite values of",
    3: "lr = nan is not finite",
    4: "epochs = 1000000000 is outside [1, 1000]",
}


def test_worker_survives_bad_instructions_and_trains_the_next_good_round(  # type: ignore[no-untyped-def]
    procs, tmp_path: Path
) -> None:
    sys.path.insert(0, str(EVIL.parent))
    try:
        from evil_coordinator import GOOD, digits_model
    finally:
        sys.path.pop(0)
    key_dir = procs.make_keys(tmp_path / "keys", ["w0"])
    state, port = tmp_path / "state", str(procs.free_port())
    coord = procs.start(
        "coordinator", "--keys", str(key_dir), "--port", port, "--state", str(state),
        "--rounds", "5", "--timeout", str(TIMEOUT_S), script=EVIL,
    )  # fmt: skip
    f = keys.node_files(key_dir, "w0")
    files = ["--cert", str(f.cert), "--key", str(f.key), "--ca", str(f.ca)]
    log = open(tmp_path / "w0.log", "ab")
    procs.logs.append(log)
    procs.procs["w0"] = worker = subprocess.Popen(
        [sys.executable, "-m", "murmura.node.cli", "client", "--server", f"127.0.0.1:{port}",
         "--partition", "0/2", "--task", "digits", *files],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert coord.wait(120) == 0, procs.log("coordinator")
    assert worker.wait(30) == 0, procs.log("w0")
    assert "w0: 1 rounds trained, stopped: shutdown" in " ".join(procs.log("w0").split())

    run = procs.run_path(state)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [1, 2, 3, 4, 5]
    for line in lines[:4]:
        [failure] = line["failures"]
        assert failure["node"] == "w0"
        assert failure["reason"].startswith("worker error: InstructionRejected: "), failure
        assert REASONS[line["round"]] in failure["reason"], failure
        assert line["participants"] == 0 and line["seconds"] < TIMEOUT_S / 2, line
    assert lines[4]["participants"] == 1 and not lines[4]["failures"], lines[4]

    initial, layout = digits_model()
    ckpt = [
        layout.flatten(load_file(str(run / "checkpoints" / f"round-{r:05d}.safetensors")))
        for r in range(6)
    ]
    for r in range(5):  # no bad round changed the model
        np.testing.assert_array_equal(ckpt[r], initial)
    expected = _local_update(ckpt[4], GOOD)
    assert np.isfinite(ckpt[5]).all()
    np.testing.assert_allclose(ckpt[5] - ckpt[4], expected, atol=1e-6, rtol=0)
    assert float(np.linalg.norm(expected)) > 0.1


def _local_update(weights: np.ndarray, config: dict[str, object]) -> np.ndarray:
    """Round 5's update of partition 0/2 as the worker's own client computes it."""
    from murmura.node.deploy import local_client
    from murmura.types import FitIns

    client = local_client("digits", "0/2")
    return np.asarray(client.fit(FitIns(5, weights, dict(config))).update)  # type: ignore[arg-type]
