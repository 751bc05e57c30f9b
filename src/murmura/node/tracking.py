"""The coordinator's MLflow tracking: one MLflow run per run, kept across restarts.

The MLflow run id is stored in the coordinator's state (``StateStore.tracking_run``), so a
resumed coordinator continues the same MLflow run; the completed rounds it already holds are
offered again and only those MLflow has not got are logged (a crash between a round's commit
and its logging loses nothing, and no step is logged twice).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from murmura.node.state import StateStore
from murmura.ops.tracked_run import start_tracking
from murmura.ops.tracking import MlflowTracker


def open_tracker(
    state: StateStore, config: Mapping[str, Any], run_path: Path, run_id: str
) -> MlflowTracker | None:
    """The tracker of run ``run_id`` (resumed if it has one), or None if tracking is off."""
    tracker = start_tracking(config, run_path, run_id, state.tracking_run(run_id))
    if tracker is None:
        return None
    state.set_tracking_run(run_id, tracker.mlflow_run_id)
    for row in state.rounds(run_id):
        if row["status"] == "completed":
            tracker.log_round(row["metrics"])
    return tracker
