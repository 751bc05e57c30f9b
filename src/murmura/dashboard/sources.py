"""What the dashboard shows, read from run folders and a coordinator's SQLite state (read-only).

Pure readers returning JSON-ready dicts: a run's rounds come from ``metrics.jsonl`` (a line
cut off mid-write is skipped), its status from ``summary.json`` (``running`` until it exists),
its privacy target from ``config.toml``. A run id from a URL is checked against a strict
pattern and must name a direct child of the runs folder, so no URL reaches outside it.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
import tomllib
from pathlib import Path
from typing import Any

from murmura.ops.run_dir import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
STATE_FILE = "state.sqlite"
SERIES = (
    "train_loss",
    "test_loss",
    "test_accuracy",
    "federated_loss",
    "federated_accuracy",
    "participants",
    "epsilon",
    "consensus_distance",
)
"""Per-round fields the charts plot (absent ones are left out)."""


def run_path(root: Path, run_id: str) -> Path | None:
    """``root/run_id`` when ``run_id`` is a plain name of an existing run folder, else None."""
    if not RUN_ID.match(run_id) or run_id in {".", ".."}:
        return None
    path = (root / run_id).resolve()
    if path.parent != root.resolve() or not path.is_dir():
        return None
    return path


def _json_file(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a ``metrics.jsonl`` with an integer ``round``; broken lines skipped."""
    try:
        text = path.read_text()
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("round"), int):
            rows.append(row)
    return rows


def run_status(path: Path) -> dict[str, Any]:
    """One line of the run list: id, status, rounds done and planned, last accuracy."""
    summary = _json_file(path / SUMMARY_FILE)
    rows = read_rows(path / METRICS_FILE)
    last = rows[-1] if rows else {}
    return {
        "id": path.name,
        "status": str(summary.get("status", "running")),
        "rounds": int(last.get("round", 0)),
        "planned": summary.get("planned_rounds", _config(path).get("run", {}).get("rounds")),
        "accuracy": last.get("test_accuracy"),
    }


def _config(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads((path / CONFIG_FILE).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every run folder under ``root`` (one holding a config or metrics), newest first."""
    if not root.is_dir():
        return []
    runs = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and RUN_ID.match(p.name)
        and ((p / CONFIG_FILE).exists() or (p / METRICS_FILE).exists())
    ]
    runs.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [run_status(p) for p in runs]


def run_detail(path: Path) -> dict[str, Any]:
    """A run's per-round series, failures per round and privacy target, for its charts."""
    rows = read_rows(path / METRICS_FILE)
    privacy = _config(path).get("privacy", {})
    series = {key: [[r["round"], r[key]] for r in rows if _finite(r.get(key))] for key in SERIES}
    series["failures"] = [[r["round"], len(r.get("failures") or [])] for r in rows]
    return {
        **run_status(path),
        "series": {k: v for k, v in series.items() if v},
        "target_epsilon": privacy.get("target_epsilon") if isinstance(privacy, dict) else None,
        "failures": [{"round": r["round"], **f} for r in rows for f in (r.get("failures") or [])][
            -50:
        ],
    }


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def coordinator_state(state_dir: Path, now: float | None = None) -> dict[str, Any] | None:
    """A coordinator's latest run from its ``state.sqlite``, opened read-only.

    The run, its round in progress (started, not completed) with the nodes heard from since it
    started (its arrivals), and every node with its last heartbeat. None when there is no state.
    """
    db_path = state_dir / STATE_FILE
    if not db_path.is_file():
        return None
    now = time.time() if now is None else now
    db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
    try:
        run = db.execute(
            "SELECT run_id, name, status FROM runs ORDER BY updated DESC LIMIT 1"
        ).fetchone()
        if run is None:
            return None
        rounds = db.execute(
            "SELECT round, status, participants, started FROM rounds WHERE run_id = ? "
            "ORDER BY round DESC LIMIT 1",
            (run[0],),
        ).fetchone()
        nodes = db.execute(
            "SELECT node, last_seen, rounds_done FROM nodes WHERE run_id = ? ORDER BY node",
            (run[0],),
        ).fetchall()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    current = None
    if rounds is not None:
        arrivals = sorted(n for n, seen, _ in nodes if seen >= rounds[3])
        current = {"round": rounds[0], "status": rounds[1], "participants": rounds[2],
                   "arrivals": arrivals}  # fmt: skip
    return {
        "run_id": run[0],
        "name": run[1],
        "status": run[2],
        "round": current,
        "nodes": [
            {"node": n, "last_seen_ago": round(now - seen, 1), "rounds_done": done}
            for n, seen, done in nodes
        ],
    }


def signature(paths: list[Path]) -> tuple[tuple[int, int], ...]:
    """(mtime, size) of each file, to tell a change without reading it; (0, 0) when missing."""
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((0, 0))
    return tuple(out)
