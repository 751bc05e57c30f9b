"""A tree job on a standing federation: 2 standing edges x 2 standing sites, real processes.

Over mutual TLS on 127.0.0.1 (certificates from ``murmura.transport.keys``): the admin
queues a tree job naming which sites sit under which edge; the federation offers it to
``murmura edge --standing`` edge-1 and edge-2 first, then each site the address of its own
edge; the job runs to ``done`` and its final model comes back with ``murmura job download``.
The federation is SIGKILLed in round 2 and restarted: the edges and the sites reconnect with
backoff, the job resumes from its checkpoint at a new root address, the edges serve it again
at new addresses and the sites follow them. The edges stay up, and a star job of the same run
then runs on the same four sites. With FedAvg and every client in every round, each edge
reports its sites' weighted mean with their example total, so the resumed tree's model equals
the uninterrupted star's (Liu et al. 2020) to float rounding.
"""

from __future__ import annotations

import os
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
from murmura.transport import keys

pytestmark = [pytest.mark.slow, pytest.mark.network]

EDGES = {"edge-1": ["site-a", "site-b"], "edge-2": ["site-c", "site-d"]}
SITES = [s for sites in EDGES.values() for s in sites]
RUN = """
[run]
name = "tree-job"
seed = 0
rounds = 6
[task]
name = "digits"
[partition]
kind = "iid"
num_clients = 4
[client]
epochs = 2
batch_size = 32
lr = 0.05
[strategy]
name = "fedavg"
min_clients = 2
[server]
round_timeout = 60
"""
TREE = (
    RUN
    + '[topology]\nkind = "tree"\nedges = 2\n'
    + "".join(
        f"[edge.{e}]\nallowlist = {sites}\nround_timeout = 60\n".replace("'", '"')
        for e, sites in EDGES.items()
    )
)


def _wait(cond: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}\n{logs()}")
        time.sleep(0.2)


class Federation:
    """A federation, its standing edges and sites in ``root``; every process killed at the end."""

    def __init__(self, root: Path) -> None:
        self.root, self.keys = root, root / "keys"
        keys.init_ca(self.keys)
        roles = {"coordinator": "coordinator", "alice": "admin"}
        roles |= {e: "edge" for e in EDGES} | {s: "worker" for s in SITES}
        for name, role in roles.items():
            keys.issue(self.keys, name, role)
        self.target = f"127.0.0.1:{free_port()}"
        (root / "federation.toml").write_text(
            f'[server]\nport = {self.target.split(":")[1]}\ncert = "keys/coordinator.pem"\n'
            f'key = "keys/coordinator.key"\nca = "keys/ca.pem"\nstate_dir = "state"\n'
            f"[federation]\njob_timeout = 240\nanswer_timeout = 60\n"
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.files: list[Any] = []

    def spawn(self, name: str, args: list[str]) -> None:
        out = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.files.append(out)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "murmura", *args],
                                            cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
                                            env=env)  # fmt: skip

    def tls(self, name: str) -> list[str]:
        return ["--cert", f"keys/{name}.pem", "--key", f"keys/{name}.key", "--ca", "keys/ca.pem"]

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{(self.root / f'{n}.log').read_text()[-2500:]}"
                         for n in self.procs)  # fmt: skip

    def link(self, name: str) -> FederationLink:
        creds = keys.Credentials.load(
            self.keys / f"{name}.pem", self.keys / f"{name}.key", self.keys / "ca.pem"
        )
        return FederationLink(self.target, creds, timeout_s=30)

    def call(self, method: str, **msg: Any) -> Any:
        link = self.link("alice")
        try:
            return link.call(method, msg)
        finally:
            link.close()

    def submit(self, config: str, name: str) -> str:
        job: str = self.call("Submit", config=config, name=name)["job"]["id"]
        return job

    def wait_done(self, job: str) -> dict[str, Any]:
        status = lambda: self.call("Status", id=job)["job"]  # noqa: E731
        _wait(lambda: status()["status"] in ("done", "failed"), 240, job, self.logs)
        got: dict[str, Any] = status()
        assert got["status"] == "done", (got, self.logs())
        return got

    def rounds_done(self, job: str) -> int:
        runs = (self.root / "state" / "jobs" / job / "runs").glob("*/metrics.jsonl")
        return sum(len(f.read_text().splitlines()) for f in runs)

    def download(self, job: str, into: str) -> dict[str, np.ndarray]:
        got = subprocess.run([sys.executable, "-m", "murmura", "job", "download", job, into,
                              "--server", self.target, *self.tls("alice")], cwd=self.root,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert got.returncode == 0, got.stdout + got.stderr
        return load_file(str(self.root / into / "model.safetensors"))

    def stop(self) -> None:
        for p in self.procs.values():
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


def test_a_tree_job_runs_on_standing_edges_and_the_edges_stay_up(federation: Federation) -> None:
    fed = federation
    fed.spawn("federation", ["server", "federation.toml"])
    for edge in EDGES:
        fed.spawn(edge, ["edge", "--standing", "--server", fed.target, *fed.tls(edge),
                         "--state-dir", f"edges/{edge}"])  # fmt: skip
    for i, site in enumerate(SITES):
        fed.spawn(site, ["client", "--server", fed.target, "--partition", f"{i}/4",
                         "--standing", *fed.tls(site)])  # fmt: skip
    for name in [*EDGES, *SITES]:
        log = fed.root / f"{name}.log"
        _wait(lambda log=log: log.exists() and "waiting for jobs" in log.read_text(), 120,
              f"{name} to connect", fed.logs)  # fmt: skip

    site = fed.link("site-a")  # a site's certificate cannot ask for jobs as an edge
    with pytest.raises(FederationError, match="PERMISSION_DENIED: 'site-a' has a worker cert"):
        site.call("Offer", {"as": "edge", "wait_ms": 0, "running": {}})
    site.close()

    tree_id = fed.submit(TREE, "tree")
    _wait(lambda: fed.rounds_done(tree_id) >= 2, 240, "round 2 of the tree job", fed.logs)
    fed.procs["federation"].kill()  # mid-job: edges and sites reconnect, the job resumes
    fed.procs["federation"].wait(10)
    (fed.root / "state" / "address").unlink()
    fed.spawn("federation", ["server", "federation.toml"])
    _wait(lambda: (fed.root / "state" / "address").exists(), 60, "the restart", fed.logs)
    tree = fed.wait_done(tree_id)
    assert tree["reason"].startswith("6 rounds")
    assert "resumed run" in (fed.root / "state" / "jobs" / tree_id / "job.log").read_text()
    answers = {a["site"]: a["accepted"] for a in tree["sites"]}
    assert answers == dict.fromkeys([*EDGES, *SITES], True)
    for edge, sites in EDGES.items():  # each edge joined the root; its sites joined the edge
        log = (fed.root / f"{edge}.log").read_text()
        assert log.count("waiting for jobs") == 2 and f"job {tree_id}: " in log
        assert "stopped: shutdown" in log  # its second start for the job saw it to the end
        for site in sites:
            log = (fed.root / f"{site}.log").read_text()
            assert log.count(f"joined run tree-job-{edge}-") == 2, log  # before and after
        assert (fed.root / "edges" / edge / "jobs" / tree_id / edge / "latest").is_file()
    tree_model = fed.download(tree_id, "tree-out")

    assert all(fed.procs[n].poll() is None for n in [*EDGES, *SITES])  # all stay up
    star = fed.wait_done(fed.submit(RUN + "min_nodes = 4\n", "star"))  # same sites, at the root
    assert {a["site"] for a in star["sites"]} == set(SITES)  # edges take no star job
    star_model = fed.download(star["id"], "star-out")
    assert set(tree_model) == set(star_model)
    for k in star_model:  # the resumed tree's model is the uninterrupted star's
        np.testing.assert_allclose(tree_model[k], star_model[k], atol=1e-5)
    assert all(p.poll() is None for p in fed.procs.values())
