"""The statistics phase over gRPC: `murmura server` and two `murmura client` processes.

Each worker computes its summary on its own partition and pushes only the numbers; the
coordinator's ``stats.json`` must equal the simulation of the same config (`murmura stats`),
per-site label counts included, and the run must then train its round as usual.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from portpool import free_port

pytestmark = [pytest.mark.slow, pytest.mark.network]

SITES = 2


def test_deployed_statistics_equal_the_simulated_ones(tmp_path: Path) -> None:
    from murmura.analytics.cli import run_statistics
    from murmura.compose.workload import federate
    from murmura.node.deploy import split_config
    from murmura.tasks import load_task

    port, state = free_port(), tmp_path / "state"
    cfg_path = tmp_path / "job.toml"
    cfg_path.write_text(
        f'[run]\nname = "fs"\nrounds = 1\n[partition]\nkind = "dirichlet"\nnum_clients = {SITES}\n'
        "[client]\nepochs = 1\n[stats]\nenabled = true\nlow = -3.0\nhigh = 3.0\nbins = 5\n"
        f'[server]\nport = {port}\nstate_dir = "{state}"\nmin_nodes = {SITES}\n'
        "round_timeout = 60\njoin_timeout = 60\n"
    )
    cli = [sys.executable, "-m", "murmura"]
    logs = [open(tmp_path / f"{n}.log", "wb") for n in ("coordinator", *range(SITES))]
    server = [*cli, "server", str(cfg_path), "--insecure"]
    procs = [subprocess.Popen(server, stdout=logs[0], stderr=subprocess.STDOUT)]
    for i in range(SITES):
        args = ["--server", f"127.0.0.1:{port}", "--config", str(cfg_path), "--insecure"]
        args += ["--partition", f"{i}/{SITES}", "--name", f"site{i}"]
        procs.append(
            subprocess.Popen([*cli, "client", *args], stdout=logs[i + 1], stderr=subprocess.STDOUT)
        )
    try:
        cfg, _ = split_config(cfg_path)
        simulated = run_statistics(cfg, federate(cfg, load_task("digits"))[1])
        assert procs[0].wait(180) == 0, (tmp_path / "coordinator.log").read_text()
        assert all(p.wait(30) == 0 for p in procs[1:])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for log in logs:
            log.close()
    run = state / "runs" / (state / "latest").read_text().strip()
    deployed = json.loads((run / "stats.json").read_text())
    assert deployed["sites"] == SITES and not deployed["failures"]
    assert deployed["count"] == simulated.count
    for j, feature in enumerate(deployed["features"]):
        assert feature["mean"] == pytest.approx(simulated.mean[j], rel=1e-9, abs=1e-12)
        assert feature["variance"] == pytest.approx(simulated.variance[j], rel=1e-9, abs=1e-12)
        assert feature["hist"] == simulated.hist[j].tolist()
        assert (feature["min"], feature["max"]) == (simulated.minimum[j], simulated.maximum[j])
    assert simulated.site_labels is not None
    sites = [deployed["site_labels"][f"site{i}"] for i in range(SITES)]
    assert sites == [simulated.site_labels[f"client-{i}"].tolist() for i in range(SITES)]
    assert (run / "label_share.png").exists()
    (line,) = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert line["participants"] == SITES and not line["failures"]
