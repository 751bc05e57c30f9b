"""A site's privacy ledger: charged once per job, composed by the accountant, crash-safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from murmura.cli import app
from murmura.config import Config
from murmura.errors import StateFileError
from murmura.federation.budget import BudgetExceeded, SiteBudget
from murmura.federation.policy import JobRefused, SitePolicy
from murmura.federation.site_guard import ChargedClient, admit
from murmura.types import FitIns, FitRes

Job = Callable[..., Config]
Eps = Callable[[list[tuple[float, float, int]], float], float]
DP = {"mode": "local", "noise_multiplier": 2.0}


def test_each_job_is_charged_once_and_the_spend_is_composed(
    tmp_path: Path, job: Job, reference_epsilon: Eps
) -> None:
    book = SiteBudget.open(tmp_path / "ledger.db", delta=1e-6)
    assert book.spent() == (0.0, 1e-6)
    book.charge("a", job(privacy=DP))
    book.charge("a", job(privacy=DP))  # a restarted job: no second charge
    book.charge("b", job(run={"rounds": 3}, privacy={"mode": "local", "noise_multiplier": 3.0}))
    book.charge("c", job())  # no DP: nothing accountable, nothing charged
    assert [(c.job_id, c.history) for c in book.entries()] == [
        ("a", ((2.0, 1.0, 5),)),
        ("b", ((3.0, 1.0, 3),)),
    ]
    eps, delta = book.spent()
    assert (eps, delta) == (reference_epsilon([(2.0, 1.0, 5), (3.0, 1.0, 3)], 1e-6), 1e-6)
    book.close()
    again = SiteBudget.open(tmp_path / "ledger.db", delta=1e-6)  # it survives the process
    assert again.spent() == (eps, delta)
    with pytest.raises(BudgetExceeded, match="job a was charged for another mechanism"):
        again.charge("a", job(privacy={"mode": "local", "noise_multiplier": 9.0}))


def test_a_charge_past_the_limit_is_refused_and_leaves_nothing(tmp_path: Path, job: Job) -> None:
    book = SiteBudget.open(tmp_path / "ledger.db")
    book.charge("a", job(privacy=DP), limit=6.0)
    with pytest.raises(BudgetExceeded, match=r"job b would take this site's epsilon to 8\.\d+"):
        book.charge("b", job(privacy=DP), limit=6.0)
    assert [c.job_id for c in book.entries()] == ["a"]
    assert not book.db.in_transaction


def test_a_charge_interrupted_inside_its_transaction_is_rolled_back(
    tmp_path: Path, job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = SiteBudget.open(tmp_path / "ledger.db")
    book.charge("a", job(privacy=DP))

    def interrupted(*_: object) -> float:
        raise KeyboardInterrupt

    monkeypatch.setattr(SiteBudget, "epsilon_after", interrupted)
    with pytest.raises(KeyboardInterrupt):
        book.charge("b", job(privacy=DP), limit=100.0)
    monkeypatch.undo()
    assert [c.job_id for c in book.entries()] == ["a"] and not book.db.in_transaction
    book.charge("b", job(privacy=DP), limit=100.0)
    assert [c.job_id for c in book.entries()] == ["a", "b"]


def test_a_damaged_ledger_is_refused_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"not a database at all")
    with pytest.raises(StateFileError, match="not a SQLite database: this site's privacy"):
        SiteBudget.open(path)
    assert path.read_bytes() == b"not a database at all"


CHARGER = """
import sys
from pathlib import Path
from murmura.config import config_from_dict
from murmura.federation.budget import SiteBudget

schema = {"label": "y", "classes": [0, 1], "features": ["a"]}
cfg = config_from_dict({
    "task": {"name": "tabular", "args": {"model": "linear", "schema": schema}},
    "partition": {"kind": "files", "path": "data", "num_clients": 2},
    "evaluation": {"central": False}, "run": {"rounds": 1},
    "privacy": {"mode": "local", "noise_multiplier": 50.0},
})
book = SiteBudget.open(Path(sys.argv[1]))
for i in range(100000):
    book.charge(f"job-{i}", cfg)
    if i == 0:
        Path(sys.argv[2]).touch()
"""


def test_a_site_killed_while_charging_loses_no_charge_and_double_counts_none(
    tmp_path: Path, job: Job, reference_epsilon: Eps
) -> None:
    ledger, started = tmp_path / "ledger.db", tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", CHARGER, str(ledger), str(started)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists(), "the charging process did not start"
        time.sleep(0.3)  # it is charging job after job
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    book = SiteBudget.open(ledger)  # whole: quick_check passed
    ids = [c.job_id for c in book.entries()]
    assert len(ids) >= 1 and ids == [f"job-{i}" for i in range(len(ids))]
    assert all(c.history == ((50.0, 1.0, 1),) for c in book.entries())
    eps = book.spent()[0]
    assert eps == pytest.approx(reference_epsilon([(50.0, 1.0, len(ids))], 1e-5), rel=1e-12)
    cfg = job(run={"rounds": 1}, privacy={"mode": "local", "noise_multiplier": 50.0})
    for i in range(len(ids)):  # the restarted site charges its jobs again: no change
        book.charge(f"job-{i}", cfg)
    assert book.spent()[0] == eps


class _Learner:
    model = "the wrapped client's model"

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(ins.weights, 7)


def test_a_site_is_charged_before_its_first_round_once_per_run_id(tmp_path: Path, job: Job) -> None:
    site = tmp_path / "site.toml"
    policy = SitePolicy.from_table({"lifetime_epsilon": 6.0}, str(site))
    with pytest.raises(JobRefused, match="site.toml: the site refuses the job: policy.lifetime"):
        admit(policy, site, job(), None)  # no DP: unbounded spend
    admitted = admit(policy, site, job(privacy=DP), None)
    run_id = ["run-1"]
    client = ChargedClient(_Learner(), admitted.charge, lambda: run_id[0], job(privacy=DP))
    assert client.model == "the wrapped client's model"
    book = SiteBudget.open(tmp_path / "privacy-ledger.db")
    assert book.entries() == []
    ins = FitIns(1, np.zeros(3, dtype=np.float32))
    assert client.fit(ins).num_examples == 7 and client.fit(ins).num_examples == 7
    assert [c.job_id for c in book.entries()] == ["run-1"]
    run_id[0] = "run-2"  # the next job would pass the lifetime epsilon: no training
    with pytest.raises(BudgetExceeded, match="past its lifetime_epsilon 6"):
        client.fit(ins)
    assert [c.job_id for c in book.entries()] == ["run-1"]


def test_site_budget_names_an_unnamed_site_by_its_file(tmp_path: Path) -> None:
    site = tmp_path / "plant-c" / "site.toml"
    site.parent.mkdir()
    site.write_text('[data]\npath = "plant-c.csv"\n[policy]\nlifetime_epsilon = 5.0\n')
    said = CliRunner().invoke(app, ["site", "budget", str(site)], terminal_width=200)
    assert said.exit_code == 0, said.output
    assert said.output.startswith(f"site {site}: no job charged yet"), said.output
