"""``murmura run`` stopped by a real SIGINT, then ``murmura run --resume``: bitwise the same.

A star run in a subprocess gets SIGINT once its first round is logged; it finishes that
round, checkpoints, writes the partial outputs with status "interrupted", says how to resume
and exits 0. Resumed from its folder in a second process, it ends with the model of an
uninterrupted run of the same config (computed in this process), bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from murmura.config import load_config
from murmura.sim import session as sessions

pytestmark = pytest.mark.slow

CONFIG = """
[run]
name = "sigint"
rounds = 8
seed = 5
[partition]
kind = "dirichlet"
num_clients = 8
alpha = 0.5
[client]
epochs = 2
batch_size = 16
lr = 0.05
[strategy]
name = "fedadam"
server_lr = 0.03
[simulation]
checkpoint_every = 3
"""


def _murmura(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src"), "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-m", "murmura", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_sigint_then_resume_gives_the_uninterrupted_model(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    proc = _murmura("run", str(config), "--out", str(tmp_path / "runs"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        lines = list((tmp_path / "runs").glob("*/metrics.jsonl"))
        if lines and lines[0].read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds"] < 8, out
    assert f"interrupted at round {summary['rounds']}; run `murmura run --resume" in out
    assert summary["resumable_from"] == summary["rounds"]  # the stop checkpointed its round
    assert (run / "model.safetensors").exists() and (run / "accuracy.png").exists()

    s = sessions.start(load_config(config), tmp_path / "full")  # while nothing else runs
    s.run()
    expected = load_file(str(s.run_dir.path / "model.safetensors"))

    resumed = _murmura("run", "--resume", str(run))
    out, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, out
    assert f"resuming run {run.name} after round {summary['rounds']}" in out
    got = load_file(str(run / "model.safetensors"))
    assert got.keys() == expected.keys()
    assert all(got[k].tobytes() == expected[k].tobytes() for k in got)
    assert json.loads((run / "summary.json").read_text())["status"] == "complete"
    rounds = [json.loads(x)["round"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rounds == list(range(1, 9))
