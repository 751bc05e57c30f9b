"""The job queue of a standing federation: one SQLite file, crash-safe (WAL, synchronous=FULL).

A job is ``queued`` until it starts, ``running`` while its coordinator serves it, then
``done``, ``failed`` (with the reason) or ``aborted``. A coordinator killed while a job runs
finds it still ``running`` and resumes it (its run resumes from its last checkpoint); queued
jobs wait their turn as before. Each site's answer to a job (accepted, or refused and why)
is kept with it, so ``murmura job status`` shows the sites' reasons.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from murmura.errors import ConfigError
from murmura.storage import open_sqlite

STORE_FILE = "jobs.sqlite"
STATUSES = ("queued", "running", "done", "failed", "aborted")
ENDED = frozenset({"done", "failed", "aborted"})
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    submitter TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    run_id TEXT NOT NULL DEFAULT '',
    submitted TEXT NOT NULL,
    started TEXT NOT NULL DEFAULT '',
    ended TEXT NOT NULL DEFAULT '',
    abort_by TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS answers (
    seq INTEGER NOT NULL,
    site TEXT NOT NULL,
    accepted INTEGER NOT NULL,
    reason TEXT NOT NULL,
    time TEXT NOT NULL,
    PRIMARY KEY (seq, site)
);
"""
RECOVER = "move it away to start an empty queue (its jobs are lost), or restore a backup"


@dataclass(frozen=True, slots=True)
class SiteAnswer:
    """A site's answer to a job: accepted, or refused with the site's reason."""

    site: str
    accepted: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Job:
    """One job of the queue."""

    id: str
    name: str
    submitter: str
    config: str
    status: str
    reason: str
    run_id: str
    submitted: str
    started: str
    ended: str
    abort_by: str

    def to_json(self, answers: list[SiteAnswer] | None = None) -> dict[str, object]:
        """The job as ``murmura job status`` shows it (without its config text)."""
        out: dict[str, object] = {
            "id": self.id, "name": self.name, "submitter": self.submitter,
            "status": self.status, "reason": self.reason, "run_id": self.run_id,
            "submitted": self.submitted, "started": self.started, "ended": self.ended,
        }  # fmt: skip
        if answers is not None:
            out["sites"] = [
                {"site": a.site, "accepted": a.accepted, "reason": a.reason} for a in answers
            ]
        return out


def job_seq(job_id: str) -> int:
    """``"job-7"`` -> 7; anything else is a ``ConfigError`` naming the id."""
    head, _, num = job_id.partition("-")
    if head != "job" or not num.isdigit():
        raise ConfigError(f"no job {job_id!r}: job ids look like job-1")
    return int(num)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


_COLS = "seq, name, submitter, config, status, reason, run_id, submitted, started, ended, abort_by"


def _job(row: tuple[object, ...]) -> Job:
    seq, *rest = row
    return Job(f"job-{seq}", *(str(x) for x in rest))


class JobStore:
    """The federation's job queue and the sites' answers, in ``state_dir/jobs.sqlite``."""

    def __init__(self, state_dir: Path) -> None:
        self.db = open_sqlite(state_dir / STORE_FILE, SCHEMA, RECOVER)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the file."""
        self.db.close()

    def submit(self, name: str, submitter: str, config: str) -> Job:
        """Queue a job; it is on disk when this returns."""
        with self._lock:
            cur = self.db.execute(
                "INSERT INTO jobs (name, submitter, config, status, submitted) "
                "VALUES (?, ?, ?, 'queued', ?)",
                (name, submitter, config, _now()),
            )
            seq = cur.lastrowid
        return self.get(f"job-{seq}")

    def get(self, job_id: str) -> Job:
        """The job ``job_id``; an unknown id is a ``ConfigError``."""
        row = self.db.execute(f"SELECT {_COLS} FROM jobs WHERE seq = ?", (job_seq(job_id),))
        got = row.fetchone()
        if got is None:
            raise ConfigError(f"no job {job_id!r}")
        return _job(got)

    def jobs(self, status: str | None = None) -> list[Job]:
        """Every job (or those with ``status``), oldest first."""
        if status is None:
            rows = self.db.execute(f"SELECT {_COLS} FROM jobs ORDER BY seq")
        else:
            rows = self.db.execute(
                f"SELECT {_COLS} FROM jobs WHERE status = ? ORDER BY seq", (status,)
            )
        return [_job(r) for r in rows.fetchall()]

    def start(self, job_id: str) -> None:
        """Mark a queued job running."""
        self._set(job_id, "status = 'running', started = ?", _now())

    def set_run(self, job_id: str, run_id: str) -> None:
        """Record the id of the job's run (its folder under the job's state dir)."""
        self._set(job_id, "run_id = ?", run_id)

    def end(self, job_id: str, status: str, reason: str = "") -> None:
        """End a job: ``done``, ``failed`` or ``aborted``, with the reason."""
        if status not in ENDED:
            raise ValueError(f"not an end status: {status!r}")
        with self._lock:
            self.db.execute(
                "UPDATE jobs SET status = ?, reason = ?, ended = ? WHERE seq = ?",
                (status, reason, _now(), job_seq(job_id)),
            )

    def request_abort(self, job_id: str, admin: str) -> Job:
        """Abort: a queued job ends at once, a running one once its runner sees the request."""
        job = self.get(job_id)
        if job.status in ENDED:
            raise ConfigError(f"job {job_id} has already ended ({job.status})")
        if job.status == "queued":
            self.end(job_id, "aborted", f"aborted by {admin} before it started")
        self._set(job_id, "abort_by = ?", admin)
        return self.get(job_id)

    def answer(self, job_id: str, site: str, accepted: bool, reason: str) -> None:
        """Record a site's answer (its latest one counts: a restarted site answers again)."""
        with self._lock:
            self.db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)",
                (job_seq(job_id), site, int(accepted), reason, _now()),
            )

    def answers(self, job_id: str) -> list[SiteAnswer]:
        """The sites' answers to a job, by site name."""
        rows = self.db.execute(
            "SELECT site, accepted, reason FROM answers WHERE seq = ? ORDER BY site",
            (job_seq(job_id),),
        )
        return [SiteAnswer(str(s), bool(a), str(r)) for s, a, r in rows.fetchall()]

    def _set(self, job_id: str, assignment: str, value: str) -> None:
        with self._lock:
            try:
                self.db.execute(
                    f"UPDATE jobs SET {assignment} WHERE seq = ?", (value, job_seq(job_id))
                )
            except sqlite3.Error as exc:  # a full disk: the caller's job cannot go on
                raise ConfigError(f"{STORE_FILE}: {exc}") from None
