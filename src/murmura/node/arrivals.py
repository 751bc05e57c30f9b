"""The asynchronous coordinator's arrivals, kept in SQLite until an aggregation consumes them.

Every settled dispatch is one row, written before the worker is told its update was
accepted: the update (FedBuff: the client's delta; FedAsync: its local model) or the reason it
failed. The coordinator takes the rows in arrival order and assigns each to the aggregation
being filled, with its staleness (or the reason it was refused), until the buffer holds
``buffer_size`` updates. A round's rows are deleted once the round is recorded, so a
restarted coordinator finds exactly the buffered updates of the round it resumes and the
arrivals no round took yet: none is lost, none counted twice. Tickets (the wire's round
numbers of the dispatches) are counted here too, so a restart never reuses one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from murmura.simtime.arrival import stale_reason
from murmura.storage import open_sqlite
from murmura.types import Vector

SCHEMA = """
CREATE TABLE IF NOT EXISTS async_arrivals (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    node TEXT NOT NULL,
    ticket INTEGER NOT NULL,
    base INTEGER NOT NULL,
    num_examples INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    payload BLOB,
    reason TEXT,
    round INTEGER,
    tau INTEGER,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS async_tickets (
    run_id TEXT PRIMARY KEY,
    next INTEGER NOT NULL
);
"""
RECOVER = "restore it from a backup, or move the state dir aside to start a new run"


@dataclass(frozen=True, slots=True)
class Arrival:
    """One settled dispatch: the model version ``base`` it started from, and what came back.

    ``payload`` is None for a failure (``reason``); ``round`` and ``tau`` once it is assigned.
    """

    seq: int
    node: str
    ticket: int
    base: int
    num_examples: int
    metrics: Mapping[str, float]
    payload: Vector | None
    reason: str | None
    round: int | None
    tau: int | None


@dataclass(frozen=True, slots=True)
class Assignment:
    """An arrival given to an aggregation: its staleness, and why it is refused (None: used)."""

    arrival: Arrival
    tau: int
    reason: str | None


def take(
    pending: Sequence[Arrival], version: int, have: int, buffer_size: int, max_staleness: int | None
) -> list[Assignment]:
    """Assign ``pending`` in order to the aggregation after ``version`` until it has its updates.

    ``have`` updates are in its buffer already; the arrivals after the ``buffer_size``-th
    usable update wait for the next aggregation. A failure, or an update staler than
    ``max_staleness``, is assigned with its reason and does not count.
    """
    out: list[Assignment] = []
    for a in pending:
        if have >= buffer_size:
            break
        tau = version - a.base
        reason = a.reason if a.reason is not None else stale_reason(tau, max_staleness)
        have += reason is None
        out.append(Assignment(a, tau, reason))
    return out


class ArrivalLog:
    """The ``async_arrivals`` and ``async_tickets`` tables of the coordinator's state file."""

    def __init__(self, path: Path, run_id: str) -> None:
        self.db = open_sqlite(path, SCHEMA, RECOVER)
        self.run_id = run_id

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def next_ticket(self) -> int:
        """A ticket no dispatch of this run had, committed before it is used."""
        row = self.db.execute(  # one statement: atomic without a transaction
            "INSERT INTO async_tickets VALUES (?, 2) "
            "ON CONFLICT(run_id) DO UPDATE SET next = next + 1 RETURNING next",
            (self.run_id,),
        ).fetchone()
        ticket = int(row[0]) - 1
        return ticket

    def add(
        self,
        node: str,
        ticket: int,
        base: int,
        num_examples: int = 0,
        metrics: Mapping[str, float] | None = None,
        payload: Vector | None = None,
        reason: str | None = None,
    ) -> None:
        """Record one arrival (an update, or a failure with its reason); on disk on return."""
        blob = None if payload is None else np.asarray(payload, dtype="<f4").tobytes()
        self.db.execute(  # one statement: atomic without a transaction
            "INSERT INTO async_arrivals SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ?, ?, "
            "?, NULL, NULL FROM async_arrivals WHERE run_id = ?",
            (
                self.run_id, node, ticket, base, num_examples,
                json.dumps(dict(metrics or {})), blob, reason, self.run_id,
            ),
        )  # fmt: skip

    def unassigned(self) -> list[Arrival]:
        """The arrivals no aggregation took yet, in arrival order."""
        return self._select("round IS NULL")

    def of_round(self, round_: int) -> list[Arrival]:
        """The arrivals assigned to aggregation ``round_``, in arrival order."""
        return self._select("round = ?", round_)

    def assign(self, seq: int, round_: int, tau: int, reason: str | None) -> None:
        """Give arrival ``seq`` to aggregation ``round_`` with its staleness (refused: why)."""
        self.db.execute(
            "UPDATE async_arrivals SET round = ?, tau = ?, reason = COALESCE(reason, ?) "
            "WHERE run_id = ? AND seq = ?",
            (round_, tau, reason, self.run_id, seq),
        )

    def drop_through(self, round_: int) -> None:
        """Delete the arrivals of aggregations up to ``round_`` (recorded: no longer needed)."""
        self.db.execute(
            "DELETE FROM async_arrivals WHERE run_id = ? AND round <= ?",
            (self.run_id, round_),
        )

    def clear(self) -> None:
        """Delete every arrival of the run (finished: what came after its last round is moot)."""
        self.db.execute("DELETE FROM async_arrivals WHERE run_id = ?", (self.run_id,))

    def _select(self, where: str, *args: object) -> list[Arrival]:
        rows = self.db.execute(
            "SELECT seq, node, ticket, base, num_examples, metrics, payload, reason, round, tau "
            f"FROM async_arrivals WHERE run_id = ? AND {where} ORDER BY seq",
            (self.run_id, *args),
        ).fetchall()
        return [_arrival(r) for r in rows]


def _arrival(r: tuple[Any, ...]) -> Arrival:
    seq, node, ticket, base, n, metrics, blob, reason, round_, tau = r
    payload = None if blob is None else np.frombuffer(blob, dtype="<f4").astype(np.float32)
    return Arrival(seq, node, ticket, base, n, json.loads(metrics), payload, reason, round_, tau)
