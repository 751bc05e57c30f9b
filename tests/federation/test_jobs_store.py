"""The job queue: order, statuses, sites' answers, and a reopened file keeps everything."""

from __future__ import annotations

from pathlib import Path

import pytest

from murmura.errors import ConfigError
from murmura.federation.store import JobStore, job_seq


def test_jobs_queue_oldest_first_and_survive_a_reopen(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    a = store.submit("first", "alice", "[run]\nrounds = 1\n")
    b = store.submit("second", "bob", "[run]\nrounds = 2\n")
    assert (a.id, b.id) == ("job-1", "job-2")
    store.start(a.id)
    store.set_run(a.id, "run-xyz")
    store.answer(a.id, "site-b", False, "max_rounds 1 < 2")
    store.answer(a.id, "site-a", True, "")
    store.close()  # as if killed here: WAL, synchronous=FULL
    again = JobStore(tmp_path)
    assert [(j.id, j.status) for j in again.jobs()] == [("job-1", "running"), ("job-2", "queued")]
    assert again.get("job-1").run_id == "run-xyz"
    assert again.get("job-2").config == "[run]\nrounds = 2\n"
    answers = again.answers("job-1")
    assert [(x.site, x.accepted, x.reason) for x in answers] == [
        ("site-a", True, ""),
        ("site-b", False, "max_rounds 1 < 2"),
    ]
    again.answer("job-1", "site-b", True, "")  # a restarted site answers again: latest counts
    assert all(x.accepted for x in again.answers("job-1"))
    again.end("job-1", "done", "2 rounds")
    assert again.jobs("queued")[0].id == "job-2"
    assert again.get("job-1").to_json()["reason"] == "2 rounds"
    again.close()


def test_abort_ends_a_queued_job_at_once_and_marks_a_running_one(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    queued = store.submit("q", "alice", "")
    running = store.submit("r", "alice", "")
    store.start(running.id)
    assert store.request_abort(queued.id, "alice").status == "aborted"
    got = store.request_abort(running.id, "carol")
    assert (got.status, got.abort_by) == ("running", "carol")  # the runner stops it
    store.end(running.id, "aborted", "aborted by carol")
    with pytest.raises(ConfigError, match="already ended"):
        store.request_abort(running.id, "alice")
    store.close()


@pytest.mark.parametrize("bad", ["7", "job-", "job-x", "run-3", "job-1; DROP TABLE jobs"])
def test_a_bad_job_id_is_a_clear_error(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="job ids look like job-1"):
        job_seq(bad)
    store = JobStore(tmp_path)
    with pytest.raises(ConfigError, match="no job 'job-9'"):
        store.get("job-9")
    store.close()
