"""A site's own privacy ledger: what every DP job has spent on its data, composed over jobs.

The ledger is a local SQLite file (``storage.open_sqlite``: WAL, ``synchronous=FULL``,
refused when damaged, never silently replaced). One row per job holds the job's mechanism
(``JobSpend``: its accountant history), not just its epsilon, so the total is composed by
the accountant over every job (RDP curves add; see ``murmura.federation.spend``) at whatever
delta the site asks. A charge is one ``INSERT`` in an ``IMMEDIATE`` transaction that also
re-reads the spend and checks the lifetime limit: a crash leaves the charge whole or absent,
two processes cannot both pass the limit, and charging a job id again changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from murmura.errors import MurmuraError, StateFileError
from murmura.federation.spend import JobSpend, composed_epsilon, job_spend
from murmura.privacy.accountant import Entry
from murmura.storage import open_sqlite

if TYPE_CHECKING:
    from murmura.config import Config

_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    job_id TEXT PRIMARY KEY,
    charged REAL NOT NULL,
    job_accountant TEXT NOT NULL,
    history TEXT NOT NULL
);
"""
_RECOVER = (
    "this site's privacy ledger must not be replaced by an empty one (that would reset its "
    "lifetime spend); restore it from a backup"
)


class BudgetExceeded(MurmuraError):
    """Charging the job would take the site past its lifetime epsilon."""


@dataclass(frozen=True, slots=True)
class Charge:
    """One job's entry in the ledger: when it was charged and its mechanism."""

    job_id: str
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
        return cls(open_sqlite(path, _SCHEMA, _RECOVER), path, accountant, delta)

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def entries(self) -> list[Charge]:
        """Every job charged, in the order charged."""
        rows = self.db.execute(
            "SELECT job_id, charged, job_accountant, history FROM charges ORDER BY charged, rowid"
        ).fetchall()
        return [Charge(str(j), float(t), str(a), self._history(str(j), h)) for j, t, a, h in rows]

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

    def epsilon_after(self, spend: JobSpend) -> float:
        """Epsilon at the site's delta if ``spend`` were charged on top of what was spent."""
        histories = [c.history for c in self.entries()] + [spend.history]
        return composed_epsilon(histories, self.delta, self.accountant)

    def charge(self, job_id: str, job: Config, *, limit: float | None = None) -> None:
        """Record what ``job`` spends, once per ``job_id``; nothing for a job without DP.

        With ``limit`` (the site's lifetime epsilon) the charge is refused with
        ``BudgetExceeded`` if it would take the total past it, checked in the same transaction.
        A ``job_id`` already charged for the same mechanism is left as it is (a restarted job);
        for another mechanism it is refused.
        """
        spend = job_spend(job)
        if spend is None:
            return
        text = json.dumps([list(e) for e in spend.history])
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute(
                "SELECT history FROM charges WHERE job_id = ?", (job_id,)
            ).fetchone()
            if row is not None:
                if self._history(job_id, str(row[0])) != spend.history:
                    raise BudgetExceeded(
                        f"job {job_id} was charged for another mechanism ({row[0]}); "
                        "a job id is charged once"
                    )
                self.db.execute("ROLLBACK")
                return
            if limit is not None and (after := self.epsilon_after(spend)) > limit:
                raise BudgetExceeded(
                    f"job {job_id} would take this site's epsilon to {after:.4g} "
                    f"(delta {self.delta:g}), past its lifetime_epsilon {limit:g}"
                )
            self.db.execute(
                "INSERT INTO charges VALUES (?, ?, ?, ?)",
                (job_id, time.time(), spend.accountant, text),
            )
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
