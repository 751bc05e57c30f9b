"""A coordinator and 3 workers train digits over mTLS with a top-k uplink and an 8-bit
downlink (issue 18).

The bytes in metrics.jsonl are the update and model buffers that crossed the wire, and equal
the bytes the simulation computes for the same rounds: the first model in float32, then each
worker's delta against the model it holds; the update decoded on the server is what the
worker's codec sent (the final model is in the simulation's band).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from portpool import free_port

from murmura.compress import framed_size, make_codec

pytestmark = [pytest.mark.slow, pytest.mark.network]

EXAMPLE = Path(__file__).parents[2] / "examples" / "deploy" / "run_local.py"
ROUNDS, WORKERS, RATIO = 3, 3, 0.05
DOWN = {"bits": 8, "bucket": 512}


def _example():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("run_local", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_workers_send_topk_updates_and_metrics_count_the_wire(tmp_path: Path) -> None:
    ex = _example()
    port = free_port()
    cfg_path = ex.write_setup(tmp_path, WORKERS, ROUNDS, port)
    with open(cfg_path, "a") as fh:
        fh.write(
            f'\n[compression]\nuplink = "topk"\nargs = {{ ratio = {RATIO} }}\n'
            'downlink = "quantize"\ndownlink_args = { bits = 8, bucket = 512 }\n'
        )
    procs = ex.launch(tmp_path, cfg_path, WORKERS, port)
    try:
        simulated = _simulate(cfg_path)
        assert procs[0].wait(240) == 0, (tmp_path / "coordinator.log").read_text()
        assert all(p.wait(30) == 0 for p in procs[1:])
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
    d = 64 * 64 + 64 + 64 * 10 + 10
    up = framed_size(make_codec("topk", ratio=RATIO), d)
    down = framed_size(make_codec("quantize", **DOWN), d)
    assert [m["round"] for m in lines] == list(range(1, ROUNDS + 1))
    for deployed, sim in zip(lines, simulated, strict=True):
        assert deployed["participants"] == WORKERS and not deployed["failures"]
        assert deployed["bytes_up_mean"] == deployed["bytes_up_max"] == up
        wire = {k: v for k, v in deployed.items() if k.startswith("bytes_")}
        assert wire == {k: v for k, v in sim.items() if k.startswith("bytes_")}
        first = deployed["round"] == 1  # a worker that holds nothing gets the float32 model
        assert wire["bytes_down_total"] == WORKERS * (4 * d if first else down)
    assert 4 * d / down > 3.9
    assert lines[-1]["test_accuracy"] > 0.5
    # `murmura plan bandwidth` on the same config predicts the measured round's bytes
    from murmura.compress.plan import Links
    from murmura.compress.plan_cli import model_size, plans
    from murmura.node.deploy import split_config

    cfg, _ = split_config(cfg_path)
    (_, dense), (_, planned) = plans(cfg, model_size(cfg), Links(10e6, 50e6))
    measured = lines[1]  # a round after the first: every worker gets a delta
    for plan_value, key in [
        (planned.node_up, "bytes_up_mean"),
        (planned.node_down, "bytes_down_mean"),
        (planned.hub_up, "bytes_up_total"),
        (planned.hub_down, "bytes_down_total"),
    ]:
        assert abs(plan_value - measured[key]) <= 0.1 * measured[key], (key, plan_value)
    assert dense.node_up == 4 * d


def _simulate(cfg_path: Path) -> list[dict[str, object]]:
    import torch

    from murmura.node.deploy import split_config
    from murmura.sim.builder import build_experiment

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg, _ = split_config(cfg_path)
        return [m.to_json() for m in build_experiment(cfg).simulation.run(ROUNDS).rounds]
    finally:
        torch.set_num_threads(threads)
