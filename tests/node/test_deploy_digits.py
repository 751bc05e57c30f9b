"""Coordinator + 5 worker processes train digits over mTLS (evidence 1).

Uses ``examples/deploy/run_local.py`` to make fresh certificates and start the nodes through
the ``server``/``client`` commands; the final test accuracy must be in the band of an
in-process simulation of the same config (same seeds, so in practice it is equal).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from portpool import free_port

pytestmark = [pytest.mark.slow, pytest.mark.network]

EXAMPLE = Path(__file__).parents[2] / "examples" / "deploy" / "run_local.py"
ROUNDS, WORKERS = 3, 5


def _example():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("run_local", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_five_workers_train_digits_like_the_simulation(tmp_path: Path) -> None:
    ex = _example()
    port = free_port()
    cfg_path = ex.write_setup(tmp_path, WORKERS, ROUNDS, port)
    procs = ex.launch(tmp_path, cfg_path, WORKERS, port)
    try:
        simulated = _simulate(cfg_path)  # while the nodes start up
        assert procs[0].wait(240) == 0, (tmp_path / "coordinator.log").read_text()
        for i, p in enumerate(procs[1:]):
            log = tmp_path / f"worker-{i}.log"
            assert p.wait(30) == 0, log.read_text() if log.exists() else f"worker-{i}: no log"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        ex.close_logs()
    lines = [
        json.loads(x)
        for x in (ex.run_path(tmp_path / "state") / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["round"] for m in lines] == list(range(1, ROUNDS + 1))
    assert all(m["participants"] == WORKERS and not m["failures"] for m in lines)
    deployed = lines[-1]["test_accuracy"]
    assert deployed > 0.8
    assert abs(deployed - simulated) <= 0.02, (deployed, simulated)
    _same_layout_as_a_simulated_run(cfg_path, ex.run_path(tmp_path / "state"))


def _same_layout_as_a_simulated_run(cfg_path: Path, run: Path) -> None:
    """The deployed folder holds what ``murmura run`` writes; its model is labelled."""
    from safetensors import safe_open

    from murmura.node.deploy import split_config
    from murmura.ops.run_dir import config_sha256

    assert {"config.toml", "metrics.jsonl", "summary.json", "accuracy.png"} <= {
        p.name for p in run.iterdir()
    }
    with safe_open(str(run / "model.safetensors"), "np") as fh:
        meta = fh.metadata()
    cfg, _ = split_config(cfg_path)
    assert meta["murmura.run_id"] == run.name and meta["murmura.round"] == str(ROUNDS)
    assert meta["murmura.config_sha256"] == config_sha256(cfg.model_dump(mode="json"))
    assert meta["murmura.topology"] == "star" and meta["murmura.task"] == "digits"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["run_id"] == run.name and summary["rounds"] == ROUNDS


def _simulate(cfg_path: Path) -> float:
    import torch

    from murmura.node.deploy import split_config
    from murmura.sim.builder import build_experiment

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the 6 node processes need the cores more
    try:
        cfg, _ = split_config(cfg_path)
        sim = build_experiment(cfg).simulation
        acc = sim.run(ROUNDS).rounds[-1].test_accuracy  # type: ignore[union-attr]
    finally:
        torch.set_num_threads(threads)
    assert acc is not None
    return acc
