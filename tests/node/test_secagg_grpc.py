"""Secure aggregation over gRPC (issue 5 evidence; RELIABILITY 21), real processes over mTLS.

10 workers run SecAgg+ with the coordinator on 127.0.0.1; 2 of them SIGKILL themselves right
after the coordinator accepted their masked inputs, so they never take part in unmasking. Their
self masks are rebuilt from the other nodes' shares, so the round still yields the weighted sum
of all 10 updates: the new model equals the initial one plus the examples-weighted mean of the
10 updates (recomputed here in-process), up to quantisation error. A model of 1.5 million
parameters makes each masked input 6 MB, over the 4 MiB gRPC message limit: it travels in
chunks (``SendStream``) and the round's sum is as exact.
"""

from __future__ import annotations

import json
import re
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


def _expected_mean(w0: np.ndarray, out: Path, names: list[str] = NAMES) -> np.ndarray:
    """The examples-weighted mean of the FakeClient updates of round 1, computed here."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from procs import FakeClient
    finally:
        sys.path.pop(0)
    fits = [FakeClient(n, out, -1).fit(FitIns(1, w0.copy())) for n in names]
    weights = np.array([f.num_examples for f in fits], dtype=np.float64)
    rows = np.stack([f.update.astype(np.float64) for f in fits])
    return (weights[:, None] * rows).sum(0) / weights.sum()


def _launch(procs, tmp_path: Path, names: list[str], victims: set[str], *extra: str):  # type: ignore[no-untyped-def]
    """Coordinator and workers; ``victims`` die right after their masked input is accepted."""
    key_dir = procs.make_keys(tmp_path / "keys", names)
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    port = str(procs.free_port())
    common = ["--keys", str(key_dir), "--port", port]
    coord = procs.start(
        "coordinator", "coordinator", *common, "--state", str(state),
        "--min-nodes", str(len(names)), "--names", ",".join(names), *extra, script=SCRIPT,
    )  # fmt: skip
    for name in names:
        extra = ["--die-after-masked-input"] if name in victims else []
        procs.start(
            name, "worker", *common, "--name", name, "--out", str(out), *extra, script=SCRIPT
        )
    return coord, state


def test_secagg_round_survives_two_deaths_after_masked_input(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    coord, state = _launch(procs, tmp_path, NAMES, VICTIMS)
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


def test_secagg_round_below_threshold_aborts_and_keeps_the_model(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # 4 nodes: the complete graph, t = 2; 3 die after masked input, so no input's self-mask
    # seed has 2 share holders left: the server must abort before reconstructing anything.
    names = ["a0", "a1", "a2", "a3"]
    coord, state = _launch(procs, tmp_path, names, {"a1", "a2", "a3"})
    assert coord.wait(80) == 0, procs.log("coordinator")
    coord_log = procs.log("coordinator")
    assert "secure aggregation aborted in round 1 at stage 'unmask'" in coord_log, coord_log
    assert "model unchanged" in coord_log
    db = sqlite3.connect(state / "state.sqlite")
    ((participants, metrics),) = db.execute(
        "SELECT participants, metrics FROM rounds WHERE round = 1"
    ).fetchall()
    assert participants == 0 and json.loads(metrics)["secagg_aborted"] is True
    assert procs.checkpoint(state, 1).tobytes() == procs.checkpoint(state, 0).tobytes()


def test_secagg_round_carries_masked_inputs_over_the_message_limit(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    names = ["b0", "b1", "b2", "b3"]
    t0 = time.monotonic()
    coord, state = _launch(procs, tmp_path, names, set(), "--big")
    assert coord.wait(80) == 0, procs.log("coordinator")
    elapsed = time.monotonic() - t0
    coord_log = procs.log("coordinator")
    assert "SECAGG_MASKED_INPUT closed, 4 of 4 answered" in coord_log, coord_log
    assert "SECAGG_UNMASK closed, 4 of 4 answered" in coord_log, coord_log
    for name in names:
        sent = re.search(r"SECAGG_MASKED_INPUT sent \((\d+) bytes\)", procs.log(name))
        assert sent is not None, procs.log(name)
        assert int(sent.group(1)) > 4 << 20  # one gRPC message could not have carried it
    db = sqlite3.connect(state / "state.sqlite")
    ((metrics,),) = db.execute("SELECT metrics FROM rounds WHERE round = 1").fetchall()
    assert json.loads(metrics)["secagg_survivors"] == 4

    w0, w1 = procs.checkpoint(state, 0), procs.checkpoint(state, 1)
    assert w0.size == 1_500_000
    expected = _expected_mean(w0, tmp_path, names)
    np.testing.assert_allclose(w1 - w0, expected, atol=2e-6, rtol=0)
    assert np.abs(w1 - w0).max() > 1e-2
    print(f"secure round over gRPC, 1.5M parameters, 4 workers: {elapsed:.1f} s")


def test_quantised_secagg_sends_two_bytes_a_word_as_simulated(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from murmura.aggregate.buffer import UpdateBuffer
    from murmura.privacy.secagg.messages import masked_input_size
    from murmura.strategy import FedAvg
    from murmura.strategy.secure import SecAggParams, SecureAggregation
    from murmura.types import RoundMetrics

    names = ["q0", "q1", "q2", "q3"]
    coord, state = _launch(procs, tmp_path, names, set(), "--levels", "8")
    assert coord.wait(80) == 0, procs.log("coordinator")
    assert "SECAGG_UNMASK closed, 4 of 4 answered" in procs.log("coordinator")
    w0, w1 = procs.checkpoint(state, 0), procs.checkpoint(state, 1)
    words = w0.size + 1
    for name in names:
        sent = re.search(r"SECAGG_MASKED_INPUT sent \((\d+) bytes\)", procs.log(name))
        assert sent is not None, procs.log(name)
        assert int(sent.group(1)) == masked_input_size(words, 2)  # 2 bytes a word on the wire
    db = sqlite3.connect(state / "state.sqlite")
    ((metrics,),) = db.execute("SELECT metrics FROM rounds WHERE round = 1").fetchall()
    deployed = json.loads(metrics)

    # the same round in simulation: the same secure strategy over the same updates
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from procs import FakeClient
    finally:
        sys.path.pop(0)
    params = SecAggParams(clip=1.0, max_weight=16.0, seed=0, level_bits=8)
    sim = SecureAggregation(FedAvg(min_clients=2, seed=0), params)
    buffer = UpdateBuffer(len(names), w0.size, keep_rows=True)
    for n in names:
        fit = FakeClient(n, tmp_path / "out", -1).fit(FitIns(1, w0.copy()))
        buffer.add(n, fit.update, fit.num_examples, {})
    w_sim = sim.aggregate(1, w0.copy(), buffer, [])
    simulated = RoundMetrics(1, participants=0)
    sim.report(1, simulated)
    up = {k: v for k, v in deployed.items() if k.startswith("bytes_up")}
    assert up == {k: v for k, v in simulated.extra.items() if k.startswith("bytes_up")}
    assert up["bytes_up_mean"] == masked_input_size(words, 2)
    # unbiased 8-bit levels on the grid clip * max_weight / 127: within 4 steps per client
    expected = _expected_mean(w0, tmp_path, names)
    step = 16.0 / 127 * len(names) / 40  # sum error over 4 clients / total weight >= 40
    assert w_sim is not None
    np.testing.assert_allclose(w1 - w0, expected, atol=step, rtol=0)
    np.testing.assert_allclose(w_sim - w0, expected, atol=step, rtol=0)
    assert np.abs(expected).max() > 10 * step  # the tolerance is well below the step taken
