"""The coordinator's embedded state: one SQLite file with runs, rounds and nodes.

A round is recorded as completed only after its checkpoint is on disk, so a restarted
coordinator resumes from the last completed round and never from a half-written one. Each
completed round keeps the SHA-256 of its checkpoint file (``file_sha256``) and of its weights
(``model_sha256``) for ``murmura.node.resume`` to verify; a round whose checkpoint turned out
damaged is marked ``discarded``. An empty or unreadable file is refused (``StateFileError``),
never replaced by a new, empty state.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True, slots=True)
class SavedRound:
    """A completed round's checkpoint and the digests recorded when it was written."""

    round: int
    checkpoint: str
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

    def open_run(self, name: str, run_id: str, config: dict[str, Any]) -> RunRecord:
        """The unfinished run called ``name`` if there is one (resume), else a new one."""
        row = self.db.execute(
            "SELECT run_id FROM runs WHERE name = ? AND status = 'running' "
            "ORDER BY created DESC LIMIT 1",
            (name,),
        ).fetchone()
        if row is None:
            now = time.time()
            self.db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, 'running', ?, ?)",
                (run_id, name, json.dumps(config, sort_keys=True), now, now),
            )
            return RunRecord(run_id, name, "running", 0, None)
        return self.run(str(row[0]))

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
        checkpoint: str,
        model_sha256: str,
        metrics: dict[str, Any],
        file_sha256: str | None = None,
    ) -> None:
        """Mark a round completed, after its checkpoint was written."""
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
            SavedRound(int(r[0]), str(r[1]), r[2], r[3], json.loads(r[4])) for r in cur.fetchall()
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
