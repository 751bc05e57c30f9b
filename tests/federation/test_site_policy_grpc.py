"""``murmura client --site`` enforces its ``[policy]`` and keeps its own privacy ledger.

Real processes over mutual TLS on 127.0.0.1, the predictive-maintenance plants' CSVs: a site
refuses a job that breaks its policy before it reads any data (exit 2, one line); two sites
run a local-DP job and each charges its ledger under the coordinator's run id (then a
DP-SGD job, charged round by round at each site's own sample rate);
``murmura site budget`` shows the spend, equal to the epsilon the coordinator reports; the
same job submitted again would pass the sites' ``lifetime_epsilon`` and is refused.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
from portpool import free_port

from murmura.federation.budget import SiteBudget
from murmura.federation.spend import composed_epsilon
from murmura.transport import keys

pytestmark = [pytest.mark.slow, pytest.mark.network]

EXAMPLE = Path(__file__).parents[2] / "examples" / "predictive-maintenance"
SRC = str(Path(__file__).parents[2] / "src")
PLANTS = ["plant-a", "plant-b"]
SCHEMA = {
    "label": "failure",
    "classes": [0, 1],
    "features": [
        {"name": "type", "categories": ["L", "M", "H"]},
        "air_temperature",
        "process_temperature",
        "rotational_speed",
        "torque",
        "tool_wear",
    ],
}
JOB = {
    "run": {"name": "dp-job", "seed": 0, "rounds": 2},
    "task": {"name": "tabular", "args": {"model": "linear", "schema": SCHEMA}},
    "partition": {"kind": "files", "path": "data", "num_clients": 2},
    "client": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "strategy": {"min_clients": 2},
    "evaluation": {"central": False, "federated": False},
    "privacy": {"mode": "local", "clip_norm": 1.0, "noise_multiplier": 3.0},
}
SGD = {"dp_sgd": True, "dp_sgd_clip_norm": 1.0, "dp_sgd_noise_multiplier": 1.2}
ROWS = {"plant-a": 3000, "plant-b": 2400}  # each plant's training rows (make_data.PLANTS)
# epsilon (rdp, delta 1e-5) of z = 3, q = 1: 2 rounds 2.029, 4 rounds 2.985: room for one job
POLICY = {"allowed_tasks": ["tabular"], "max_rounds": 5, "lifetime_epsilon": 2.5}


def _murmura(args: list[str], cwd: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    env = {"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "murmura", *args]
    if log is None:
        return subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env=env
        )
    with open(log, "wb") as out:  # the child holds its own copy of the descriptor
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)


def _client(tmp: Path, plant: str, job: Path, port: int, log: Path | None = None) -> list[str]:
    k = tmp / "keys"
    tls = ["--cert", f"{k}/{plant}.pem", "--key", f"{k}/{plant}.key", "--ca", f"{k}/ca.pem"]
    site = ["--site", str(tmp / f"{plant}.toml"), "--config", str(job)]
    return ["client", "--server", f"127.0.0.1:{port}", *site, *tls]


def _say(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, " ".join(out.decode().split())


def test_a_site_refuses_by_policy_and_spends_its_lifetime_budget(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_data", EXAMPLE / "make_data.py")
    assert spec is not None and spec.loader is not None
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    make_data.write(tmp_path / "data", 0)
    keys.init_ca(tmp_path / "keys")
    keys.issue(tmp_path / "keys", "coordinator", "coordinator")
    for plant in PLANTS:
        keys.issue(tmp_path / "keys", plant, "worker")
        policy = {**POLICY, "ledger": f"{plant}-ledger.db"}  # each site its own
        site = {"data": {"path": f"data/{plant}.csv"}, "site": {"name": plant}, "policy": policy}
        (tmp_path / f"{plant}.toml").write_text(tomli_w.dumps(site))
    job = tmp_path / "job.toml"
    job.write_text(tomli_w.dumps(JOB))
    port = free_port()

    # 1. a job past max_rounds: refused before any data is read (plant-c's file is missing)
    long_job = tmp_path / "long.toml"
    long_job.write_text(tomli_w.dumps({**JOB, "run": {**JOB["run"], "rounds": 50}}))
    keys.issue(tmp_path / "keys", "plant-c", "worker")
    no_data = {"data": {"path": "data/missing.csv"}, "policy": POLICY}
    (tmp_path / "plant-c.toml").write_text(tomli_w.dumps(no_data))
    code, said = _say(_murmura(_client(tmp_path, "plant-c", long_job, port), tmp_path))
    assert code == 2, said
    assert said == (
        f"error: {tmp_path / 'plant-c.toml'}: the site refuses the job: "
        "policy.max_rounds = 5: the job asks for 50 rounds"
    )
    assert SiteBudget.open(tmp_path / "privacy-ledger.db").entries() == []  # nothing charged

    # 2. the DP job runs on two sites, each charging its own ledger
    k = tmp_path / "keys"
    server = {
        "host": "127.0.0.1", "port": port, "cert": f"{k}/coordinator.pem",
        "key": f"{k}/coordinator.key", "ca": f"{k}/ca.pem", "allowlist": PLANTS,
        "state_dir": str(tmp_path / "state"), "min_nodes": 2, "round_timeout": 60,
        "join_timeout": 120,
    }  # fmt: skip
    (tmp_path / "server.toml").write_text(tomli_w.dumps({**JOB, "server": server}))
    procs = [_murmura(["server", "server.toml"], tmp_path, tmp_path / "coordinator.log")]
    for plant in PLANTS:
        log = tmp_path / f"{plant}.log"
        procs.append(_murmura(_client(tmp_path, plant, job, port), tmp_path, log))
    try:
        assert procs[0].wait(240) == 0, (tmp_path / "coordinator.log").read_text()
        assert all(p.wait(60) == 0 for p in procs[1:])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    state = tmp_path / "state"
    run_id = (state / "latest").read_text().strip()
    summary = json.loads((state / "runs" / run_id / "summary.json").read_text())
    for plant in PLANTS:
        code, said = _say(_murmura(["site", "budget", f"{plant}.toml"], tmp_path))
        assert code == 0, said
        assert f"{run_id} " in said and "client-level z 3, q 1: 2 rounds" in said
        assert f"{summary['epsilon']:.4f}" in said  # what the coordinator reported
        assert (
            f"total: epsilon {summary['epsilon']:.4f} at delta 1e-05 over 1 DP jobs "
            f"(rdp accountant, composed); lifetime_epsilon 2.5, {2.5 - summary['epsilon']:.4f} left"
        ) in said

    # 3. the same job again would take the site past its lifetime epsilon: refused
    code, said = _say(_murmura(_client(tmp_path, "plant-a", job, port), tmp_path))
    assert code == 2, said
    assert "the site refuses the job: policy.lifetime_epsilon = 2.5: this site has spent " in said
    assert f"epsilon {summary['epsilon']:.4g} and the job would take it to 2.985" in said

    # 4. a DP-SGD job: each site charges every round it trains, at its own data's sample rate
    sgd = {**JOB, "run": {**JOB["run"], "rounds": 1}, "privacy": SGD}
    (tmp_path / "sgd.toml").write_text(tomli_w.dumps(sgd))
    port = free_port()
    server = {**server, "port": port, "state_dir": str(tmp_path / "state-sgd")}
    (tmp_path / "server.toml").write_text(tomli_w.dumps({**sgd, "server": server}))
    for plant in PLANTS:  # a fresh ledger, and a policy that requires DP
        site = {"data": {"path": f"data/{plant}.csv"}, "site": {"name": plant},
                "policy": {"require_dp": True, "ledger": f"{plant}-sgd.db"}}  # fmt: skip
        (tmp_path / f"{plant}.toml").write_text(tomli_w.dumps(site))
    procs = [_murmura(["server", "server.toml"], tmp_path, tmp_path / "coordinator.log")]
    for plant in PLANTS:
        log = tmp_path / f"{plant}.log"
        procs.append(_murmura(_client(tmp_path, plant, tmp_path / "sgd.toml", port), tmp_path, log))
    try:
        assert procs[0].wait(240) == 0, (tmp_path / "coordinator.log").read_text()
        assert all(p.wait(60) == 0 for p in procs[1:])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    run_id = (tmp_path / "state-sgd" / "latest").read_text().strip()
    for plant, rows in ROWS.items():
        book = SiteBudget.open(tmp_path / f"{plant}-sgd.db")
        (charge,) = book.entries()
        assert (charge.job_id, charge.part.split()[:2]) == (run_id, ["round", "1"])
        q, steps = 64 / rows, round(rows / 64)  # the site's own rows, the job's batch of 64
        assert charge.history == ((SGD["dp_sgd_noise_multiplier"], q, steps),)
        eps = composed_epsilon([charge.history], 1e-5, "rdp")
        code, said = _say(_murmura(["site", "budget", f"{plant}.toml"], tmp_path))
        assert code == 0 and f"DP-SGD z 1.2, q {q:g}: {steps} steps in 1 rounds" in said, said
        assert f"total: epsilon {eps:.4f} at delta 1e-05 over 1 DP jobs" in said

    # 5. a bad site file: one line, no traceback
    (tmp_path / "bad.toml").write_text('[data]\npath = "x.csv"\n[policy]\nmax_epoch = 2\n')
    code, said = _say(_murmura(["site", "budget", "bad.toml"], tmp_path))
    assert code == 2 and said.startswith("error: bad.toml: [policy] max_epoch: unknown key")
    code, said = _say(_murmura(["site", "budget", "nowhere.toml"], tmp_path))
    assert code == 2 and said.startswith("error: nowhere.toml: [Errno 2]"), said
