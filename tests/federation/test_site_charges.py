"""Every privacy mode a job can name is charged to a site's ledger, or refused with the reason.

DP-SGD is charged round by round with the accountant's epsilon of the site's own data (its
``n``, the round's batch size and epochs), admitted on its worst case over every data size;
the statistics phase's noise is charged when the site answers it; a charge survives a site
killed between the charge and the send. Real sites (a CSV read by the job's task), the real
accountant (checked against dp-accounting called directly) and a real SQLite ledger.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.client import LocalSGD
from murmura.config import Config
from murmura.errors import ConfigError, InstructionRejected
from murmura.federation.budget import JOB, STATS, BudgetExceeded, SiteBudget
from murmura.federation.policy import JobRefused, SitePolicy
from murmura.federation.site_guard import ChargedClient, admit, release_digest, site_learner
from murmura.federation.spend import (
    composed_epsilon,
    dp_sgd_round,
    dp_sgd_worst_case,
    job_releases,
)
from murmura.types import FitIns, FitRes

Job = Callable[..., Config]
Eps = Callable[[list[tuple[float, float, int]], float], float]
SGD = {"dp_sgd": True, "dp_sgd_noise_multiplier": 1.5}
CLIENT = {"epochs": 1, "batch_size": 8, "lr": 0.1}  # what the coordinator sends every round
LOCAL = {"mode": "local", "noise_multiplier": 2.0}
NOISED_STATS = {"enabled": True, "minmax": False, "noise_multiplier": 4.0}


def _site(tmp: Path, rows: int, policy: dict[str, Any]) -> Path:
    """A site config over a CSV of ``rows`` rows (the job's schema: a, b, c -> y)."""
    rng = np.random.default_rng(rows)
    lines = ["a,b,c,y"] + [
        f"{a:.3f},{b:.3f},{c:.3f},{int(a + b > 1)}" for a, b, c in rng.random((rows, 3))
    ]
    (tmp / "rows.csv").write_text("\n".join(lines) + "\n")
    site = {"data": {"path": "rows.csv"}, "policy": policy}
    (tmp / "site.toml").write_text(tomli_w.dumps(site))
    return tmp / "site.toml"


def _charged(site: Path, cfg: Config, job_id: str = "job-1") -> ChargedClient:
    """The site's client for ``cfg``, admitted by its policy and charged as it releases."""
    from murmura.node.site import load_site_config, site_client

    site_cfg = load_site_config(site)
    policy = SitePolicy.from_table(site_cfg.policy, str(site))
    admitted = admit(policy, site, cfg, None)
    client = site_client(site_cfg, cfg, "s1")
    return ChargedClient(client, admitted.charge, lambda: job_id, cfg, site_learner(client))


def _ins(round_: int, client: ChargedClient, **config: Any) -> FitIns:
    weights = client.inner.inner.model.flat.detach().numpy().copy()
    return FitIns(round_, weights, {**CLIENT, **config})


def test_a_dp_sgd_job_is_charged_the_accountants_epsilon_of_the_sites_own_data(
    tmp_path: Path, job: Job, reference_epsilon: Eps
) -> None:
    site = _site(tmp_path, 50, {"require_dp": True})
    cfg = job(run={"rounds": 3}, privacy=SGD, client=CLIENT)
    client = _charged(site, cfg)
    learner = site_learner(client.inner)
    assert learner is not None and learner.num_examples == len(learner.local_data()[0]) == 50
    first = _ins(1, client)
    client.fit(first)
    client.fit(first)  # the same instruction again: the same update, nothing new released
    client.fit(_ins(2, client, epochs=2))  # the coordinator asks for two epochs this round
    book = SiteBudget.open(tmp_path / "privacy-ledger.db")
    # q = 8 / 50; round(50 / 8) = 6 batches an epoch
    assert [(c.part.split()[:2], c.history) for c in book.entries()] == [
        (["round", "1"], ((1.5, 0.16, 6),)),
        (["round", "2"], ((1.5, 0.16, 12),)),
    ]
    assert book.entries()[0].part == f"round 1 {release_digest(first)}"
    assert book.spent()[0] == pytest.approx(reference_epsilon([(1.5, 0.16, 18)], 1e-5), rel=1e-9)


def test_a_dp_sgd_job_is_admitted_on_its_worst_case_over_every_data_size(
    job: Job, reference_epsilon: Eps
) -> None:
    cfg = job(run={"rounds": 2}, privacy=SGD, client={"batch_size": 4, "epochs": 1})
    worst = dp_sgd_worst_case(cfg, 1e-5, "rdp")
    # none of these data sizes spends more (the worst of each batch count, and a few more)
    each = {
        n: reference_epsilon([(1.5, min(1.0, 4 / n), 2 * max(1, round(n / 4)))], 1e-5)
        for n in (1, 4, 6, 8, 11, 14, 19, 22, 30)  # the fewest rows of 1 to 6 batches, others
    }
    most = max(each, key=lambda n: each[n])
    assert worst.history == ((1.5, min(1.0, 4 / most), 2 * max(1, round(most / 4))),)
    assert worst.epsilon(1e-5) == pytest.approx(each[most], rel=1e-9)
    (release,) = job_releases(cfg, 1e-5, "rdp")
    assert (release.key, release.history) == ("privacy.dp_sgd_noise_multiplier", worst.history)


@settings(max_examples=6, deadline=None)
@given(
    z=st.sampled_from([0.8, 1.5, 3.0]),
    batch=st.integers(1, 64),
    epochs=st.integers(1, 3),
    rows=st.integers(1, 5000),
)
def test_no_site_spends_more_than_the_worst_case_it_was_admitted_on(
    z: float, batch: int, epochs: int, rows: int, job: Job
) -> None:
    cfg = job(
        run={"rounds": 2},
        privacy={**SGD, "dp_sgd_noise_multiplier": z},
        client={"batch_size": batch, "epochs": epochs},
    )
    worst = dp_sgd_worst_case(cfg, 1e-5, "rdp").epsilon(1e-5)
    one = dp_sgd_round(z, rows, batch, epochs)
    assert composed_epsilon([[one, one]], 1e-5, "rdp") <= worst


def test_the_third_dp_sgd_job_past_lifetime_epsilon_is_refused_with_the_numbers(
    tmp_path: Path, job: Job, reference_epsilon: Eps
) -> None:
    cfg = job(run={"rounds": 2}, privacy=SGD, client=CLIENT)
    (worst,) = dp_sgd_worst_case(cfg, 1e-5, "rdp").history
    actual = (1.5, 0.16, 12)  # 50 rows: q = 8 / 50, 6 steps a round, 2 rounds
    limit = round(reference_epsilon([actual, worst], 1e-5) + 0.01, 2)  # room for two jobs
    site = _site(tmp_path, 50, {"lifetime_epsilon": limit})
    for job_id in ("job-1", "job-2"):
        client = _charged(site, cfg, job_id)
        for r in (1, 2):
            client.fit(_ins(r, client))
    book = SiteBudget.open(tmp_path / "privacy-ledger.db")
    spent = reference_epsilon([actual, actual], 1e-5)
    assert book.spent()[0] == pytest.approx(spent, rel=1e-9)
    after = reference_epsilon([actual, actual, worst], 1e-5)
    z, q, n = worst
    with pytest.raises(JobRefused) as refused:
        _charged(site, cfg, "job-3")
    assert str(refused.value) == (
        f"{site}: the site refuses the job: policy.lifetime_epsilon = {limit:g}: this site has "
        f"spent epsilon {spent:.4g} and the job would take it to {after:.4g} (delta 1e-05; "
        f"privacy.dp_sgd_noise_multiplier {z:.4g}, q {q:g}, {n} steps)"
    )


def test_a_round_the_coordinator_makes_costlier_is_refused_in_the_charge(
    tmp_path: Path, job: Job
) -> None:
    cfg = job(run={"rounds": 2}, privacy=SGD, client=CLIENT)
    worst = dp_sgd_worst_case(cfg, 1e-5, "rdp").epsilon(1e-5)
    client = _charged(_site(tmp_path, 50, {"max_epsilon": worst}), cfg)
    client.fit(_ins(1, client))
    with pytest.raises(BudgetExceeded, match=r"past its max_epsilon"):
        client.fit(_ins(2, client, epochs=40))  # not what the site admitted
    assert len(SiteBudget.open(tmp_path / "privacy-ledger.db").entries()) == 1


def test_the_statistics_phase_is_charged_its_noise_once_and_refused_without_it(
    tmp_path: Path, job: Job
) -> None:
    from murmura.analytics.bounded import statistics_epsilon
    from murmura.analytics.grpc_round import STATS_KEY, site_answer
    from murmura.analytics.query import query_from_config

    cfg = job(privacy=LOCAL, stats=NOISED_STATS)  # the rows are read under local DP's wrapper
    client = _charged(_site(tmp_path, 30, {"require_dp": True}), cfg)
    config = {STATS_KEY: query_from_config(cfg.stats, 2).to_json()}
    _, rows = site_answer(client, config)
    site_answer(client, config)  # asked again (a restarted coordinator): charged once
    book = SiteBudget.open(tmp_path / "privacy-ledger.db")
    assert rows == 30 and [(c.part, c.history) for c in book.entries()] == [
        (STATS, ((4.0, 1.0, 1),))
    ]
    assert book.spent()[0] == statistics_epsilon(4.0, 1e-5)  # what stats.json reports
    client.fit(FitIns(1, client.inner.inner.model.flat.detach().numpy().copy(), CLIENT))
    assert [c.part for c in book.entries()] == [STATS, JOB]  # and the training, whole
    plain = _charged(_site(tmp_path, 30, {}), job(privacy=LOCAL))
    with pytest.raises(InstructionRejected, match=r"no statistics phase \(\[stats\] enabled"):
        site_answer(plain, config)  # a phase the accepted job does not have


@dataclass
class _Learner:
    """A site's learner as the charge sees it: its size and hyper-parameters."""

    num_examples: int = 50
    hp: LocalSGD = field(default_factory=lambda: LocalSGD(batch_size=10))
    local_steps: int | None = None

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(np.asarray(ins.weights), self.num_examples)

    def local_data(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((self.num_examples, 3)), np.zeros(self.num_examples)


MODES: dict[str, tuple[dict[str, Any], dict[str, Any], str | None]] = {
    # name: ([privacy], [stats], the part charged; None: refused by a site requiring DP)
    "none": ({}, {}, None),
    "central": ({"mode": "central", "noise_multiplier": 1.0}, {}, JOB),
    "local": ({"mode": "local", "noise_multiplier": 1.0}, {}, JOB),
    "local+dp_sgd": ({"mode": "local", "noise_multiplier": 1.0, **SGD}, {}, JOB),
    "dp_sgd": (SGD, {}, "round"),
    "dp_sgd, z = 0": ({**SGD, "dp_sgd_noise_multiplier": 0.0}, {}, None),
    "local, z = 0": ({"mode": "local", "noise_multiplier": 0.0}, {}, None),
    "stats noised": ({"mode": "local", "noise_multiplier": 1.0}, NOISED_STATS, STATS),
    "stats exact": ({"mode": "local", "noise_multiplier": 1.0}, {"enabled": True}, None),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_privacy_mode_is_charged_or_refused(tmp_path: Path, job: Job, mode: str) -> None:
    privacy, stats, part = MODES[mode]
    cfg = job(privacy=privacy, stats=stats, topology={"kind": "star"})
    site = tmp_path / "site.toml"
    policy = SitePolicy.from_table({"require_dp": True}, str(site))
    if part is None:
        with pytest.raises(JobRefused, match="policy.require_dp: the site requires differential"):
            admit(policy, site, cfg, None)
        return
    admitted = admit(policy, site, cfg, None)
    client = ChargedClient(_Learner(), admitted.charge, lambda: "job-1", cfg, _Learner())
    if cfg.stats.enabled:
        client.local_data()
    client.fit(FitIns(1, np.zeros(3, dtype=np.float32), {}))
    book = SiteBudget.open(tmp_path / "privacy-ledger.db")
    parts = [c.part.split()[0] for c in book.entries()]
    assert part in parts and book.spent()[0] > 0


def test_a_job_without_dp_is_charged_nothing_by_a_site_without_a_dp_policy(job: Job) -> None:
    charged: list[tuple[str, str]] = []
    cfg = job(stats={"enabled": True})  # exact training and statistics: nothing accountable
    client = ChargedClient(_Learner(), lambda j, p, h: charged.append((j, p)), lambda: "j", cfg,
                           _Learner())  # fmt: skip
    client.local_data()
    client.fit(FitIns(1, np.zeros(3, dtype=np.float32), {}))
    assert charged == []


KILLED = """
import os, signal, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[2])
from conftest import make_job
from test_site_charges import SGD, _Learner
from murmura.federation.policy import SitePolicy
from murmura.federation.site_guard import ChargedClient, admit
from murmura.types import FitIns

class Dying(_Learner):
    def fit(self, ins):  # charged, trained, about to send: the site dies
        os.kill(os.getpid(), signal.SIGKILL)

site = Path(sys.argv[1])
cfg = make_job(privacy=SGD)
admitted = admit(SitePolicy.from_table({}, str(site)), site, cfg, None)  # a ledger, no limit
client = ChargedClient(Dying(), admitted.charge, lambda: "job-1", cfg, _Learner())
client.fit(FitIns(1, np.zeros(3, dtype=np.float32), {}))
"""


def test_a_site_killed_between_the_charge_and_the_send_keeps_the_charge(
    tmp_path: Path, job: Job, reference_epsilon: Eps
) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    here = str(Path(__file__).parent)
    proc = subprocess.run(
        [sys.executable, "-c", KILLED, str(tmp_path / "site.toml"), here], env=env, timeout=120
    )
    assert proc.returncode == -9
    book = SiteBudget.open(tmp_path / "privacy-ledger.db")
    (charge,) = book.entries()
    assert (charge.job_id, charge.history) == ("job-1", ((1.5, 0.2, 5),))  # 50 rows, B = 10
    assert book.spent()[0] == pytest.approx(reference_epsilon([(1.5, 0.2, 5)], 1e-5), rel=1e-9)
    # the restarted site is sent the same round again: the same release, not charged twice
    admitted = admit(
        SitePolicy.from_table({}, "site.toml"), tmp_path / "site.toml", job(privacy=SGD), None
    )
    again = ChargedClient(
        _Learner(), admitted.charge, lambda: "job-1", job(privacy=SGD), _Learner()
    )
    again.fit(FitIns(1, np.zeros(3, dtype=np.float32), {}))
    assert len(book.entries()) == 1


def test_a_first_ledger_keeps_its_charges(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE charges (job_id TEXT PRIMARY KEY, charged REAL NOT NULL, "
        "job_accountant TEXT NOT NULL, history TEXT NOT NULL)"
    )
    db.execute("INSERT INTO charges VALUES ('old', 1.0, 'rdp', '[[2.0, 1.0, 5]]')")
    db.commit()
    db.close()
    book = SiteBudget.open(path)
    assert [(c.job_id, c.part, c.history) for c in book.entries()] == [
        ("old", JOB, ((2.0, 1.0, 5),))
    ]


def test_a_files_job_with_dp_sgd_runs_its_coordinator_but_not_a_target(job: Job) -> None:
    from murmura.node.site import coordinator_parts

    strategy, weights, _ = coordinator_parts(job(privacy=SGD))
    assert len(weights) > 0
    with pytest.raises(ConfigError, match="target_epsilon with dp_sgd alone"):
        coordinator_parts(job(privacy={**SGD, "target_epsilon": 5.0}))
