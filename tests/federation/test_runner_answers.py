"""When the sites' answers cannot make up a job, it fails at once with every refusal's reason."""

from __future__ import annotations

import time
from pathlib import Path

from murmura.federation.config import FederationConfig, FederationSection
from murmura.federation.runner import ActiveJob, JobRunner
from murmura.federation.store import JobStore
from murmura.node.deploy import ServerSection
from murmura.ops.audit import AuditLedger


def _runner(tmp_path: Path, answer_timeout: float = 30.0) -> tuple[JobRunner, JobStore, str]:
    fed = FederationConfig(
        ServerSection(state_dir=str(tmp_path)), FederationSection(answer_timeout=answer_timeout)
    )
    store = JobStore(tmp_path)
    runner = JobRunner(fed, store, AuditLedger.open(tmp_path), insecure=True)
    job = store.submit("j", "alice", "")
    store.start(job.id)
    runner.active[job.id] = ActiveJob(store.get(job.id), "127.0.0.1:1", 2, time.monotonic())
    return runner, store, job.id


def test_a_refusal_that_leaves_too_few_sites_fails_the_job_with_the_reason(
    tmp_path: Path,
) -> None:
    runner, store, job = _runner(tmp_path)
    for site in ("site-a", "site-b", "site-c"):
        runner.seen(site)
    store.answer(job, "site-a", True, "")
    store.answer(job, "site-b", False, "max_rounds = 1 < the job's 2")
    assert runner._too_few(job) is None  # site-c may still accept
    store.answer(job, "site-c", True, "")
    assert runner._too_few(job) is None  # two accepted: the job runs
    store.answer(job, "site-c", False, "task 'digits' is not allowed")
    assert runner._too_few(job) == (
        "too few sites accepted (1, needs 2): site-b refused: max_rounds = 1 < the job's 2; "
        "site-c refused: task 'digits' is not allowed"
    )
    store.close()
    runner.ledger.close()


def test_a_silent_site_counts_as_not_accepting_after_the_answer_timeout(tmp_path: Path) -> None:
    runner, store, job = _runner(tmp_path, answer_timeout=0.01)
    runner.seen("site-a")
    runner.seen("site-b")
    store.answer(job, "site-b", False, "no")
    time.sleep(0.02)
    assert runner._too_few(job) == "too few sites accepted (0, needs 2): site-b refused: no"
    store.close()
    runner.ledger.close()


def test_a_site_offered_the_job_stays_pending_while_it_reads_its_data(tmp_path: Path) -> None:
    """A site reading its data does not poll; it must not be taken for gone (a CI race)."""
    runner, store, job = _runner(tmp_path, answer_timeout=0.2)
    runner.active[job].offered.add("site-a")  # offered, then silent for longer than SITE_SEEN_S
    runner.seen("site-b")
    store.answer(job, "site-b", False, "no")
    assert runner._too_few(job) is None  # site-a may still accept
    time.sleep(0.25)
    assert runner._too_few(job) == "too few sites accepted (0, needs 2): site-b refused: no"
    store.close()
    runner.ledger.close()
