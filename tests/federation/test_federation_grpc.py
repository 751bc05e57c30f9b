"""A standing federation over mTLS: a coordinator and two sites as real processes.

One federation lives through the whole test: an admin queues two jobs and the two standing
sites (``--partition``) run both, one after the other; the coordinator is SIGKILLed while
the first runs and the second waits, and comes back with the queue intact and the first
resumed from its checkpoint (its final model equals an uninterrupted run's); an abort stops
a running job and the next job still runs; a worker certificate gets PERMISSION_DENIED on
the job API; the job after the abort runs under secure aggregation (SecAgg+); the sites
stay up throughout; every admin action is a signed ledger record.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from portpool import free_port
from safetensors.numpy import load_file

from murmura.federation.link import FederationError, FederationLink
from murmura.ops.audit import read_records, verify_state_dir
from murmura.transport import keys

pytestmark = [pytest.mark.slow, pytest.mark.network]

JOB = """
[run]
name = "digits-{name}"
seed = 0
rounds = {rounds}
[task]
name = "digits"
[partition]
kind = "iid"
num_clients = 2
[client]
epochs = {epochs}
batch_size = 32
lr = 0.05
[strategy]
name = "fedavg"
min_clients = 2
[server]
min_nodes = 2
round_timeout = 60
"""

SECAGG = "[secagg]\nenabled = true\nmax_weight = 1000\n"  # a site's ~900 digits


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Federation:
    """The processes of one federation in ``root``, and an admin's link to it."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.keys = root / "keys"
        keys.init_ca(self.keys)
        for name, role in [("coordinator", "coordinator"), ("site-a", "worker"),
                           ("site-b", "worker"), ("alice", "admin")]:  # fmt: skip
            keys.issue(self.keys, name, role)
        (root / "federation.toml").write_text(
            f'[server]\nport = {self.port}\ncert = "keys/coordinator.pem"\n'
            f'key = "keys/coordinator.key"\nca = "keys/ca.pem"\nstate_dir = "state"\n'
            f"round_timeout = 60\n[federation]\njob_timeout = 240\n"
        )
        self.server: subprocess.Popen[bytes] | None = None
        self.sites: list[subprocess.Popen[bytes]] = []
        self.files: list[Any] = []
        self.target = f"127.0.0.1:{self.port}"

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        out = open(self.root / log, "ab")  # noqa: SIM115 - closed in stop()
        self.files.append(out)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.Popen([sys.executable, "-m", "murmura", *args], cwd=self.root,
                                stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip

    def start_server(self) -> None:
        self.server = self._spawn(["server", "federation.toml"], "server.log")

    def start_sites(self) -> None:
        for i, name in enumerate(["site-a", "site-b"]):
            self.sites.append(self._spawn(
                ["client", "--server", self.target, "--partition", f"{i}/2", "--standing",
                 "--cert", f"keys/{name}.pem", "--key", f"keys/{name}.key",
                 "--ca", "keys/ca.pem"], f"{name}.log"))  # fmt: skip

    def link(self, name: str = "alice") -> FederationLink:
        creds = keys.Credentials.load(
            self.keys / f"{name}.pem", self.keys / f"{name}.key", self.keys / "ca.pem"
        )
        return FederationLink(self.target, creds, timeout_s=30)

    def call(self, method: str, **msg: Any) -> Any:
        link = self.link()
        try:
            return link.call(method, msg)
        finally:
            link.close()

    def status(self, job: str) -> dict[str, Any]:
        got: dict[str, Any] = self.call("Status", id=job)["job"]
        return got

    def rounds_done(self, job: str) -> int:
        files = list((self.root / "state" / "jobs" / job / "runs").glob("*/metrics.jsonl"))
        return sum(len(f.read_text().splitlines()) for f in files)

    def wait_status(self, job: str, want: str, timeout: float = 180) -> dict[str, Any]:
        _wait(lambda: self.status(job)["status"] in (want, "failed"), timeout, f"{job} {want}")
        got = self.status(job)
        assert got["status"] == want, (got, self.logs())
        return got

    def logs(self) -> str:
        return "\n".join((self.root / n).read_text()[-3000:] for n in
                         ("server.log", "site-a.log", "site-b.log"))  # fmt: skip

    def stop(self) -> None:
        for p in [*self.sites, *([self.server] if self.server else [])]:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for f in self.files:
            f.close()


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    fed = Federation(tmp_path)
    try:
        yield fed
    finally:
        fed.stop()


def _job_cli(fed: Federation, *args: str) -> str:
    """``murmura job ARGS`` as the admin would type it; its output."""
    admin = ["--server", fed.target, "--cert", "keys/alice.pem", "--key", "keys/alice.key",
             "--ca", "keys/ca.pem"]  # fmt: skip
    got = subprocess.run([sys.executable, "-m", "murmura", "job", *args, *admin], cwd=fed.root,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    return " ".join(got.stdout.split())


def _model(fed: Federation, job: str, into: str) -> dict[str, np.ndarray]:
    said = _job_cli(fed, "download", job, into)
    for name in ("model.safetensors", "metrics.jsonl", "summary.json", "ledger.jsonl"):
        assert name in said and (fed.root / into / name).is_file()
    return load_file(str(fed.root / into / "model.safetensors"))


def test_a_standing_federation_runs_queued_jobs_survives_a_kill_and_aborts(
    federation: Federation,
) -> None:
    fed = federation
    fed.start_server()
    fed.start_sites()
    _wait(lambda: (fed.root / "state" / "address").exists(), 60, "the federation to listen")
    worker = fed.link("site-a")  # a worker certificate on every admin call
    for method in ("Submit", "List", "Status", "Abort", "Logs"):
        with pytest.raises(FederationError) as err:
            worker.call(method, {"config": JOB, "name": "x", "id": "job-1"})
        assert err.value.code == "PERMISSION_DENIED" and "admin" in err.value.reason
    with pytest.raises(FederationError) as err:  # a malformed site call: refused, served on
        worker.call("Offer", {"running": ["not", "a", "map"]})
    assert err.value.code == "INVALID_ARGUMENT"
    worker.close()
    with pytest.raises(FederationError) as err:
        fed.call("Status", id="job-99")
    assert err.value.code == "NOT_FOUND"
    tree = JOB.format(name="tree", rounds=2, epochs=1) + '[topology]\nkind = "tree"\n'
    with pytest.raises(FederationError) as err:  # refused at submission, with the reason
        fed.call("Submit", config=tree, name="tree")
    assert err.value.code == "FAILED_PRECONDITION", err.value.reason
    assert "kind = 'tree' needs an [edge.NAME] table per standing edge" in err.value.reason

    long = JOB.format(name="long", rounds=8, epochs=4)
    first = fed.call("Submit", config=long, name="long")["job"]["id"]
    second = fed.call("Submit", config=JOB.format(name="short", rounds=2, epochs=1),
                      name="short")["job"]["id"]  # fmt: skip
    _wait(lambda: fed.rounds_done(first) >= 3, 180, "round 3 of the first job")
    assert fed.server is not None
    fed.server.send_signal(signal.SIGKILL)  # one job running, one queued
    fed.server.wait(10)
    (fed.root / "state" / "address").unlink()
    fed.start_server()
    _wait(lambda: (fed.root / "state" / "address").exists(), 60, "the federation to listen")
    done = fed.wait_status(first, "done")
    assert done["reason"].startswith("8 rounds") and done["run_id"]
    assert "resumed run" in (fed.root / "state" / "jobs" / first / "job.log").read_text()
    assert fed.wait_status(second, "done")["reason"].startswith("2 rounds")
    assert all(p.poll() is None for p in fed.sites), "a site left after its jobs"

    again = fed.call("Submit", config=long, name="uninterrupted")["job"]["id"]
    fed.wait_status(again, "done")
    resumed, straight = _model(fed, first, "first"), _model(fed, again, "again")
    assert all(np.array_equal(resumed[k], straight[k]) for k in straight)  # bitwise

    doomed = fed.call("Submit", config=JOB.format(name="doomed", rounds=200, epochs=5),
                      name="doomed")["job"]["id"]  # fmt: skip
    _wait(lambda: fed.rounds_done(doomed) >= 2, 120, "round 2 of the job to abort")
    fed.call("Abort", id=doomed)
    assert fed.wait_status(doomed, "aborted", 60)["reason"] == "aborted by alice"
    shown = _job_cli(fed, "status", doomed)
    assert "aborted" in shown and "site site-a: accepted" in shown
    secure = JOB.format(name="after", rounds=2, epochs=1) + SECAGG  # the next job: SecAgg+
    last = fed.call("Submit", config=secure, name="after")["job"]["id"]
    assert fed.wait_status(last, "done")["reason"].startswith("2 rounds")
    metrics = (fed.root / "state" / "jobs" / last / "runs").glob("*/metrics.jsonl")
    rounds = [json.loads(line) for f in metrics for line in f.read_text().splitlines()]
    assert [(r["secagg_survivors"], r["secagg_aborted"]) for r in rounds] == [(2, False)] * 2
    assert all(p.poll() is None for p in fed.sites)

    listed = fed.call("List")["jobs"]
    assert [j["status"] for j in listed] == ["done", "done", "done", "aborted", "done"]
    state = fed.root / "state"
    admin = [(r.node, r.event, r.run_id) for r in read_records(state / "audit.sqlite")
             if r.event in ("job_submit", "job_abort", "job_download")]  # fmt: skip
    assert ("alice", "job_abort", doomed) in admin
    assert ("alice", "job_download", first) in admin
    assert sum(1 for a in admin if a[1] == "job_submit") == 5
    assert verify_state_dir(state).ok
    summary = json.loads((fed.root / "first" / "summary.json").read_text())
    assert summary["rounds"] == 8


def test_a_site_whose_policy_refuses_a_job_gives_its_reason(federation: Federation) -> None:
    fed = federation
    (fed.root / "site-b.toml").write_text('[data]\npath = "never-read"\n[policy]\nmax_rounds = 1\n')
    fed.start_server()
    fed.sites.append(
        fed._spawn(
            [
                "client",
                "--server",
                fed.target,
                "--partition",
                "0/2",
                "--standing",
                "--cert",
                "keys/site-a.pem",
                "--key",
                "keys/site-a.key",
                "--ca",
                "keys/ca.pem",
            ],
            "site-a.log",
        )
    )
    fed.sites.append(fed._spawn(
        ["client", "--server", fed.target, "--site", "site-b.toml", "--cert", "keys/site-b.pem",
         "--key", "keys/site-b.key", "--ca", "keys/ca.pem"], "site-b.log"))  # fmt: skip
    _wait(lambda: (fed.root / "state" / "address").exists(), 60, "the federation to listen")
    for name in ("site-a", "site-b"):  # both connected: a refusal with nobody pending fails fast
        log = fed.root / f"{name}.log"
        _wait(lambda log=log: "waiting for jobs" in log.read_text(), 120, f"{name} to connect")
    job = fed.call("Submit", config=JOB.format(name="two", rounds=2, epochs=1), name="two")
    got = fed.wait_status(job["job"]["id"], "failed")
    assert got["reason"].startswith("too few sites accepted (1, needs 2): site-b refused: ")
    assert "max_rounds" in got["reason"]
    answers = {s["site"]: s for s in got["sites"]}
    assert answers["site-a"]["accepted"] and not answers["site-b"]["accepted"]
    assert "max_rounds" in answers["site-b"]["reason"]
    assert all(p.poll() is None for p in fed.sites)  # both stay up for the next job
