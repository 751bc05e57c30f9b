"""A site's own privacy ledger: what every DP job has spent on its data, composed over jobs.

The ledger is a local SQLite file (``storage.open_sqlite``: WAL, ``synchronous=FULL``,
refused when damaged, never silently replaced). One row per part of a job that released the
site's data (``JOB``: the whole job's client-level mechanism; ``STATS``: its statistics
phase; one per DP-SGD round released) holds the mechanism (its accountant history), not just
its epsilon, so the total is composed by the accountant over every job (RDP curves add; see
``murmura.federation.spend``) at whatever delta the site asks. A charge is one ``INSERT`` in
an ``IMMEDIATE`` transaction that also re-reads the spend and checks the limits: a crash
leaves the charge whole or absent, two processes cannot both pass a limit, and charging the
same part of a job again changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from murmura.errors import MurmuraError, StateFileError
from murmura.federation.spend import composed_epsilon, job_spend
from murmura.privacy.accountant import Entry
from murmura.storage import open_sqlite

if TYPE_CHECKING:
    from murmura.config import Config

_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    job_id TEXT NOT NULL,
    part TEXT NOT NULL,
    charged REAL NOT NULL,
    job_accountant TEXT NOT NULL,
    history TEXT NOT NULL,
    PRIMARY KEY (job_id, part)
);
"""
JOB = "job"
"""The part of a job charged whole: its client-level mechanism over every round."""
STATS = "stats"
"""The part of a job charged for its statistics phase."""
_RECOVER = (
    "this site's privacy ledger must not be replaced by an empty one (that would reset its "
    "lifetime spend); restore it from a backup"
)


class BudgetExceeded(MurmuraError):
    """Charging the job would take the site past its lifetime epsilon."""


@dataclass(frozen=True, slots=True)
class Charge:
    """One part of a job in the ledger: when it was charged and its mechanism."""

    job_id: str
    part: str
    """``JOB``, ``STATS`` or a DP-SGD round (``round R <digest>``)."""
    charged: float
    """Unix time of the charge."""
    job_accountant: str
    history: tuple[Entry, ...]


class SiteBudget:
    """The privacy a site has spent on its data, job after job (``BudgetExceeded`` past a limit).

    ``accountant`` composes the jobs and ``delta`` is the site's: ``spent()`` is the epsilon
    of everything charged so far at that delta.
    """

    def __init__(self, db: sqlite3.Connection, path: Path, accountant: str, delta: float) -> None:
        self.db, self.path = db, path
        self.accountant, self.delta = accountant, delta

    @classmethod
    def open(cls, path: Path, *, accountant: str = "rdp", delta: float = 1e-5) -> SiteBudget:
        """Open (or create) the ledger at ``path``; a damaged file raises ``StateFileError``."""
        book = cls(open_sqlite(path, _SCHEMA, _RECOVER), path, accountant, delta)
        book._upgrade()
        return book

    def _upgrade(self) -> None:
        """Move the first ledgers' ``charges`` (one whole-job row per job) into ``releases``."""
        old = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'charges'"
        if self.db.execute(old).fetchone() is None:
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                "INSERT OR IGNORE INTO releases SELECT job_id, ?, charged, job_accountant, "
                "history FROM charges",
                (JOB,),
            )
            self.db.execute("DROP TABLE charges")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def entries(self) -> list[Charge]:
        """Every part charged, in the order charged."""
        rows = self.db.execute(
            "SELECT job_id, part, charged, job_accountant, history FROM releases "
            "ORDER BY charged, rowid"
        ).fetchall()
        return [
            Charge(str(j), str(p), float(t), str(a), self._history(str(j), h))
            for j, p, t, a, h in rows
        ]

    def jobs(self) -> dict[str, list[Charge]]:
        """Every part charged, by job, jobs in the order first charged."""
        out: dict[str, list[Charge]] = {}
        for c in self.entries():
            out.setdefault(c.job_id, []).append(c)
        return out

    def _history(self, job_id: str, text: str) -> tuple[Entry, ...]:
        try:
            return tuple((float(z), float(q), int(n)) for z, q, n in json.loads(text))
        except (ValueError, TypeError) as exc:
            why = f"{self.path}: job {job_id}'s entry is unreadable ({exc})"
            raise StateFileError(why) from None

    def epsilon(self, charges: list[Charge]) -> float:
        """Epsilon at the site's delta of ``charges`` composed (0.0 for none)."""
        return composed_epsilon([c.history for c in charges], self.delta, self.accountant)

    def spent(self) -> tuple[float, float]:
        """(epsilon, delta) of every DP job charged so far, composed by the accountant."""
        return self.epsilon(self.entries()), self.delta

    def epsilon_after(self, history: Iterable[Entry]) -> float:
        """Epsilon at the site's delta if ``history`` were charged on top of what was spent."""
        histories = [c.history for c in self.entries()] + [tuple(history)]
        return composed_epsilon(histories, self.delta, self.accountant)

    def charge(self, job_id: str, job: Config, *, limit: float | None = None) -> None:
        """Charge ``job``'s client-level mechanism whole (``JOB``); nothing for a job without."""
        spend = job_spend(job)
        if spend is not None:
            self.charge_part(job_id, JOB, spend.history, spend.accountant, limit=limit)

    def charge_part(
        self,
        job_id: str,
        part: str,
        history: tuple[Entry, ...],
        job_accountant: str,
        *,
        limit: float | None = None,
        job_limit: float | None = None,
    ) -> None:
        """Record that ``part`` of ``job_id`` released ``history``, once per (job, part).

        ``limit`` (the site's lifetime epsilon) and ``job_limit`` (its most for one job) refuse
        the charge with ``BudgetExceeded`` if it would take the total, or the job's own parts,
        past them, checked in the same transaction. A part already charged for the same
        mechanism is left as it is (a restarted job); for another mechanism it is refused.
        """
        text = json.dumps([list(e) for e in history])
        name = job_id if part == JOB else f"{job_id} ({part})"
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute(
                "SELECT history FROM releases WHERE job_id = ? AND part = ?", (job_id, part)
            ).fetchone()
            if row is not None:
                if self._history(job_id, str(row[0])) != history:
                    raise BudgetExceeded(
                        f"job {name} was charged for another mechanism ({row[0]}); "
                        "a job id is charged once"
                    )
                self.db.execute("ROLLBACK")
                return
            if limit is not None and (after := self.epsilon_after(history)) > limit:
                spent = self.spent()[0]
                raise BudgetExceeded(
                    f"job {name} would take this site's epsilon to {after:.4g} (spent "
                    f"{spent:.4g}, delta {self.delta:g}), past its lifetime_epsilon {limit:g}"
                )
            if job_limit is not None:
                own = [c.history for c in self.entries() if c.job_id == job_id] + [history]
                if (mine := composed_epsilon(own, self.delta, self.accountant)) > job_limit:
                    raise BudgetExceeded(
                        f"job {name} would spend epsilon {mine:.4g} of this site's data "
                        f"(delta {self.delta:g}), past its max_epsilon {job_limit:g}"
                    )
            self.db.execute(
                "INSERT INTO releases VALUES (?, ?, ?, ?, ?)",
                (job_id, part, time.time(), job_accountant, text),
            )
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
