"""The coordinator's embedded state: one SQLite file with runs, rounds and nodes.

A round is recorded as completed only after its checkpoint is on disk, so a restarted
coordinator resumes from the last completed round and never from a half-written one. Each
completed round keeps the SHA-256 of its checkpoint file (``file_sha256``) and of its weights
(``model_sha256``) for ``murmura.node.resume`` to verify; a round whose checkpoint turned out
damaged is marked ``discarded``. An empty or unreadable file is refused (``StateFileError``),
never replaced by a new, empty state. With ``[tracking] mlflow``, a run's MLflow run id is
kept (``tracking``), so that a resumed run goes on logging into the same MLflow run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from murmura.errors import ConfigError
from murmura.storage import open_sqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    round INTEGER NOT NULL,
    status TEXT NOT NULL,
    participants INTEGER NOT NULL DEFAULT 0,
    failures TEXT NOT NULL DEFAULT '[]',
    checkpoint TEXT,
    model_sha256 TEXT,
    file_sha256 TEXT,
    metrics TEXT NOT NULL DEFAULT '{}',
    started REAL NOT NULL,
    ended REAL,
    PRIMARY KEY (run_id, round)
);
CREATE TABLE IF NOT EXISTS nodes (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    node TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    rounds_done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, node)
);
CREATE TABLE IF NOT EXISTS tracking (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id),
    mlflow_run_id TEXT NOT NULL
);
"""
RECOVER = (
    "restore it from a backup to resume the run, or move the state dir aside to start a new run"
)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run and where it stands."""

    run_id: str
    name: str
    status: str
    last_round: int
    checkpoint: str | None
    note: str = ""
    """Why this run was chosen, when the operator should know (a finished run was not resumed)."""


@dataclass(frozen=True, slots=True)
class SavedRound:
    """A completed round's checkpoint and the digests recorded when it was written."""

    round: int
    checkpoint: str | None
    """None: recorded without a checkpoint (``checkpoint_every``); a resume runs it again."""
    model_sha256: str | None
    file_sha256: str | None
    metrics: dict[str, Any]


class StateStore:
    """Runs, rounds and nodes of one coordinator, in a SQLite file (WAL, synchronous=FULL)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.db = open_sqlite(self.path, SCHEMA, RECOVER)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(rounds)")}
        if "file_sha256" not in columns:  # a state file of an earlier version
            self.db.execute("ALTER TABLE rounds ADD COLUMN file_sha256 TEXT")

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def open_run(
        self,
        name: str,
        run_id: str,
        config: dict[str, Any],
        *,
        new_run: bool = False,
        resume: str | None = None,
    ) -> RunRecord:
        """The unfinished run called ``name`` if there is one (resume), else a new one.

        ``new_run``: a new run ``run_id`` even if one is unfinished. ``resume``: that unfinished
        run; a finished or unknown id is a ``ConfigError`` that lists the runs. ``note`` says
        when a new run follows a finished one, or leaves an unfinished one behind.
        """
        if new_run and resume is not None:
            raise ConfigError("--new-run and --run-id exclude each other: choose one")
        if resume is not None:
            return self._resume(name, resume)
        rows = self.db.execute(
            "SELECT run_id, status FROM runs WHERE name = ? ORDER BY created DESC, rowid DESC",
            (name,),
        ).fetchall()
        unfinished = next((str(r[0]) for r in rows if r[1] == "running"), None)
        if unfinished is not None and not new_run:
            return self.run(unfinished)
        now = time.time()
        self.db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, 'running', ?, ?)",
            (run_id, name, json.dumps(config, sort_keys=True), now, now),
        )
        note = ""
        if unfinished is not None:
            note = (
                f"run {unfinished} is unfinished (round {self.run(unfinished).last_round}) and "
                f"left as it is; --new-run: starting run {run_id}"
            )
        elif rows:
            note = f"run {rows[0][0]} is complete; starting run {run_id}"
        return RunRecord(run_id, name, "running", 0, None, note)

    def runs(self, name: str) -> list[RunRecord]:
        """The runs called ``name``, oldest first, each with its last completed round."""
        rows = self.db.execute(
            "SELECT run_id FROM runs WHERE name = ? ORDER BY created, rowid", (name,)
        ).fetchall()
        return [self.run(str(r[0])) for r in rows]

    def _resume(self, name: str, run_id: str) -> RunRecord:
        known = self.runs(name)
        listed = ", ".join(f"{r.run_id} ({r.status}, round {r.last_round})" for r in known)
        listed = f"known runs of {name!r}: {listed}" if known else f"no runs of {name!r} yet"
        rec = next((r for r in known if r.run_id == run_id), None)
        if rec is None:
            raise ConfigError(f"--run-id {run_id}: no such run in {self.path}; {listed}")
        if rec.status != "running":
            raise ConfigError(
                f"--run-id {run_id}: the run is {rec.status}, nothing to resume "
                f"(--new-run starts another); {listed}"
            )
        return rec

    def run(self, run_id: str) -> RunRecord:
        """A run with its last completed round and that round's checkpoint."""
        name, status = self.db.execute(
            "SELECT name, status FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        last = self.db.execute(
            "SELECT round, checkpoint FROM rounds WHERE run_id = ? AND status = 'completed' "
            "ORDER BY round DESC LIMIT 1",
            (run_id,),
        ).fetchone()
        if last is None:
            return RunRecord(run_id, name, status, 0, None)
        return RunRecord(run_id, name, status, int(last[0]), last[1])

    def start_round(self, run_id: str, round_: int) -> None:
        """Record that a round began (a restart may begin it again)."""
        self.db.execute(
            "INSERT INTO rounds (run_id, round, status, started) VALUES (?, ?, 'running', ?) "
            "ON CONFLICT(run_id, round) DO UPDATE SET status = 'running', "
            "started = excluded.started",
            (run_id, round_, time.time()),
        )

    def complete_round(
        self,
        run_id: str,
        round_: int,
        *,
        participants: int,
        failures: list[dict[str, str]],
        checkpoint: str | None,
        model_sha256: str,
        metrics: dict[str, Any],
        file_sha256: str | None = None,
    ) -> None:
        """Mark a round completed, after its checkpoint (if it has one) was written."""
        now = time.time()
        self.db.execute(
            "INSERT INTO rounds (run_id, round, status, participants, failures, checkpoint, "
            "model_sha256, file_sha256, metrics, started, ended) "
            "VALUES (?, ?, 'completed', ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(run_id, round) DO UPDATE SET status = 'completed', "
            "participants = excluded.participants, failures = excluded.failures, "
            "checkpoint = excluded.checkpoint, model_sha256 = excluded.model_sha256, "
            "file_sha256 = excluded.file_sha256, metrics = excluded.metrics, "
            "ended = excluded.ended",
            (
                run_id,
                round_,
                participants,
                json.dumps(failures),
                checkpoint,
                model_sha256,
                file_sha256,
                json.dumps(metrics),
                now,
                now,
            ),
        )
        self.db.execute("UPDATE runs SET updated = ? WHERE run_id = ?", (now, run_id))

    def saved_rounds(self, run_id: str) -> list[SavedRound]:
        """The completed rounds of a run with their checkpoints, newest first."""
        cur = self.db.execute(
            "SELECT round, checkpoint, model_sha256, file_sha256, metrics FROM rounds "
            "WHERE run_id = ? AND status = 'completed' ORDER BY round DESC",
            (run_id,),
        )
        return [
            SavedRound(int(r[0]), None if r[1] is None else str(r[1]), r[2], r[3], json.loads(r[4]))
            for r in cur.fetchall()
        ]

    def discard_rounds(self, run_id: str, after: int) -> None:
        """Mark the completed rounds after ``after`` discarded: the run goes on from ``after``."""
        self.db.execute(
            "UPDATE rounds SET status = 'discarded' WHERE run_id = ? AND round > ? "
            "AND status = 'completed'",
            (run_id, after),
        )

    def finish_run(self, run_id: str) -> None:
        """Mark a run finished; a later start with the same name begins a new run."""
        self.db.execute(
            "UPDATE runs SET status = 'finished', updated = ? WHERE run_id = ?",
            (time.time(), run_id),
        )

    def seen(self, run_id: str, node: str, completed_round: bool = False) -> None:
        """Record a node's activity (and a round it contributed to)."""
        now = time.time()
        self.db.execute(
            "INSERT INTO nodes VALUES (?, ?, ?, ?, ?) ON CONFLICT(run_id, node) DO UPDATE SET "
            "last_seen = excluded.last_seen, rounds_done = rounds_done + excluded.rounds_done",
            (run_id, node, now, now, int(completed_round)),
        )

    def rounds(self, run_id: str) -> list[dict[str, Any]]:
        """All rounds of a run, oldest first."""
        cur = self.db.execute(
            "SELECT round, status, participants, failures, model_sha256, metrics "
            "FROM rounds WHERE run_id = ? ORDER BY round",
            (run_id,),
        )
        return [
            {
                "round": r[0],
                "status": r[1],
                "participants": r[2],
                "failures": json.loads(r[3]),
                "model_sha256": r[4],
                "metrics": json.loads(r[5]),
            }
            for r in cur.fetchall()
        ]

    def contributors(self, run_id: str) -> list[str]:
        """The nodes that contributed to a completed round of a run, sorted."""
        cur = self.db.execute(
            "SELECT node FROM nodes WHERE run_id = ? AND rounds_done > 0 ORDER BY node", (run_id,)
        )
        return [str(r[0]) for r in cur.fetchall()]

    def run_config(self, run_id: str) -> dict[str, Any]:
        """The resolved config a run was started with."""
        row = self.db.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise ConfigError(f"no run {run_id} in {self.path}")
        config: dict[str, Any] = json.loads(row[0])
        return config

    def tracking_run(self, run_id: str) -> str | None:
        """The MLflow run id a run is tracked in, if it is."""
        row = self.db.execute(
            "SELECT mlflow_run_id FROM tracking WHERE run_id = ?", (run_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def set_tracking_run(self, run_id: str, mlflow_run_id: str) -> None:
        """Record the MLflow run id a run is tracked in."""
        self.db.execute(
            "INSERT INTO tracking VALUES (?, ?) ON CONFLICT(run_id) DO UPDATE SET "
            "mlflow_run_id = excluded.mlflow_run_id",
            (run_id, mlflow_run_id),
        )
