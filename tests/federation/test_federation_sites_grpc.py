"""Issue 15's scenario: two admins, three standing sites with their own data and policies.

Real processes over mutual TLS on 127.0.0.1, certificates from ``murmura keys``, the
predictive-maintenance plants' CSVs, local-DP jobs of two rounds. Alice and Bob each queue
a job; plant-a allows only Alice's jobs, so Bob's job runs on plant-b and plant-c (the job
needs 2 of 3) and ``murmura job status`` shows plant-a's reason. plant-c's lifetime epsilon
leaves room for two such jobs (epsilon composed by the accountant, never read from the job,
over the training and the noised statistics phase): it refuses the third, which runs on the
two others, one of them restarted between jobs. Each job's statistics phase (the
federation's mean and std, noised) waits for its first round's sites. The ledger's signed
``job_submit`` records name each admin; plant-c's ledger holds its two.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w
from portpool import free_port

from murmura.federation.budget import SiteBudget
from murmura.ops.audit import read_records, verify_state_dir

pytestmark = [pytest.mark.slow, pytest.mark.network]

EXAMPLE = Path(__file__).parents[2] / "examples" / "predictive-maintenance"
PLANTS = ["plant-a", "plant-b", "plant-c"]
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
    "partition": {"kind": "files", "path": "data", "num_clients": 3},
    "client": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "strategy": {"min_clients": 2},
    "evaluation": {"central": False, "federated": False},
    "privacy": {"mode": "local", "clip_norm": 1.0, "noise_multiplier": 3.0},
    "server": {"round_timeout": 60},  # min_nodes 1: the job waits for min_clients sites
    "stats": {"enabled": True, "standardise": True, "bins": 10,  # the federation's mean, std
              "minmax": False, "noise_multiplier": 5.0,  # noised: plant-c requires DP
              "low": [0.0, 0.0, 0.0, 290.0, 300.0, 1000.0, 0.0, 0.0],
              "high": [1.0, 1.0, 1.0, 310.0, 320.0, 2200.0, 80.0, 260.0]},
}  # fmt: skip
# rdp epsilon at delta 1e-5 of z = 3, q = 1 (local DP) 2 rounds and the statistics' z = 5
# once: one job 2.224, two 3.276, three 4.122: plant-c has room for two of these, not three
POLICIES = {
    "plant-a": {"allowed_submitters": ["alice"]},
    "plant-b": {"allowed_tasks": ["tabular"], "max_rounds": 5},
    "plant-c": {"max_epsilon": 2.5, "lifetime_epsilon": 3.6},
}


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Sites:
    """A federation's processes in ``root``: one coordinator, a standing site per plant."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}

    def murmura(self, *args: str) -> str:
        """A one-shot ``murmura ARGS`` (keys, job); its output, words joined by one space."""
        got = subprocess.run([sys.executable, "-m", "murmura", *args], cwd=self.root, env=self.env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert got.returncode == 0, got.stdout + got.stderr
        return " ".join(got.stdout.split())

    def job(self, admin: str, *args: str) -> str:
        tls = ["--cert", f"keys/{admin}.pem", "--key", f"keys/{admin}.key", "--ca", "keys/ca.pem"]
        return self.murmura("job", *args, "--server", self.target, *tls)

    def spawn(self, name: str, *args: str) -> None:
        with open(self.root / f"{name}.log", "ab") as out:  # the child keeps its own copy
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "murmura", *args], cwd=self.root, env=self.env,
                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip

    def site(self, plant: str) -> None:
        tls = ["--cert", f"keys/{plant}.pem", "--key", f"keys/{plant}.key", "--ca", "keys/ca.pem"]
        self.spawn(plant, "client", "--server", self.target, "--site", f"{plant}.toml", *tls)

    def status(self, admin: str, job: str, timeout: float = 120) -> str:
        """``murmura job status`` once the job has ended."""
        ended = ("done", "failed", "aborted")
        _wait(lambda: self.job(admin, "status", job).split()[2] in ended, timeout, f"{job} ends")
        return self.job(admin, "status", job)

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{(self.root / f'{n}.log').read_text()[-2000:]}"
                         for n in self.procs)  # fmt: skip

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)


def test_two_admins_three_sites_policies_and_a_lifetime_budget(
    tmp_path: Path, reference_epsilon: Callable[[list[tuple[float, float, int]], float], float]
) -> None:
    spec = importlib.util.spec_from_file_location("make_data", EXAMPLE / "make_data.py")
    assert spec is not None and spec.loader is not None
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    make_data.write(tmp_path / "data", 0)
    fed = Sites(tmp_path)
    fed.murmura("keys", "init", "keys")
    for name, role in [("coordinator", "coordinator"), ("alice", "admin"), ("bob", "admin"),
                       *((p, "worker") for p in PLANTS)]:  # fmt: skip
        fed.murmura("keys", "issue", "keys", name, "--role", role)
    (tmp_path / "federation.toml").write_text(tomli_w.dumps({
        "server": {"port": fed.port, "cert": "keys/coordinator.pem", "key": "keys/coordinator.key",
                   "ca": "keys/ca.pem", "state_dir": "state"},
        "federation": {"job_timeout": 240}}))  # fmt: skip
    for plant in PLANTS:
        policy = {**POLICIES[plant], "ledger": f"{plant}-ledger.db"}  # each site its own
        site = {"data": {"path": f"data/{plant}.csv"}, "policy": policy}
        (tmp_path / f"{plant}.toml").write_text(tomli_w.dumps(site))
    state = tmp_path / "state"
    (tmp_path / "job.toml").write_text(tomli_w.dumps(JOB))  # 2 of 3 sites suffice
    every = {**JOB, "strategy": {"min_clients": 3}}
    (tmp_path / "all.toml").write_text(tomli_w.dumps(every))
    try:
        fed.spawn("server", "server", "federation.toml")
        for plant in PLANTS:
            fed.site(plant)
        _wait(lambda: (tmp_path / "state" / "address").exists(), 60, "the federation")
        first = fed.job("alice", "submit", "all.toml").split()[1]
        second = fed.job("bob", "submit", "job.toml").split()[1]
        assert (first, second) == ("job-1", "job-2")

        said = fed.status("alice", first)
        assert said.startswith("job-1 all done (by alice,"), fed.logs()
        assert all(f"site {p}: accepted" in said for p in PLANTS), said
        said = fed.status("bob", second)
        assert said.startswith("job-2 job done (by bob,") and "2 rounds" in said, fed.logs()
        assert "site plant-b: accepted" in said and "site plant-c: accepted" in said, said
        assert (
            "site plant-a: refused: plant-a.toml: the site refuses the job: "
            "policy.allowed_submitters: 'bob' is not one of ['alice']"
        ) in said

        # plant-b restarted between jobs (SIGTERM: a clean stop); it takes the next job
        fed.procs["plant-b"].send_signal(signal.SIGTERM)
        assert fed.procs["plant-b"].wait(30) == 0
        fed.site("plant-b")
        back = lambda: (fed.root / "plant-b.log").read_text().count("waiting for jobs") == 2  # noqa: E731
        _wait(back, 120, "plant-b to ask for jobs again")  # else the job may start without it
        third = fed.job("alice", "submit", "job.toml").split()[1]
        said = fed.status("alice", third)
        spent, after = (reference_epsilon([(3.0, 1.0, 2 * k), (5.0, 1.0, k)], 1e-5) for k in (2, 3))
        assert said.startswith("job-3 job done (by alice,") and "2 rounds" in said, fed.logs()
        assert "site plant-a: accepted" in said and "site plant-b: accepted" in said, said
        assert (
            "site plant-c: refused: plant-c.toml: the site refuses the job: "
            f"policy.lifetime_epsilon = 3.6: this site has spent epsilon {spent:.4g} and the "
            f"job would take it to {after:.4g} (delta 1e-05; privacy.noise_multiplier 3, q 1, "
            "2 steps; stats.noise_multiplier 5, q 1, 1 steps)"
        ) in said
        assert all(p.poll() is None for p in fed.procs.values()), fed.logs()
    finally:
        fed.stop()

    for job, n in [(first, 3), (second, 2), (third, 2)]:  # not whichever site came first
        assert f"statistics asked of {n} nodes" in (state / "jobs" / job / "job.log").read_text()
    charged = {p: list(SiteBudget.open(tmp_path / f"{p}-ledger.db").jobs()) for p in PLANTS}
    parts = [c.part for c in SiteBudget.open(tmp_path / "plant-c-ledger.db").entries()]
    assert sorted(parts) == ["job", "job", "stats", "stats"]  # training and statistics
    assert charged == {"plant-a": [first, third], "plant-b": [first, second, third],
                       "plant-c": [first, second]}  # fmt: skip
    submits = [(r.node, r.run_id) for r in read_records(state / "audit.sqlite")
               if r.event == "job_submit"]  # fmt: skip
    assert submits == [("alice", first), ("bob", second), ("alice", third)]
    assert verify_state_dir(state).ok
