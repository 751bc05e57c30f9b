"""Tracking a run from start to end, the same way for ``murmura run`` and ``murmura server``.

``start_tracking`` opens the MLflow run when ``[tracking] mlflow`` is on (None otherwise);
the caller feeds the tracker each round's ``metrics.jsonl`` line; ``end_tracking`` logs the
run folder and, with ``register_as``, registers the final model with its lineage.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from murmura.ops.tracking import MlflowTracker

log = logging.getLogger(__name__)


def start_tracking(
    config: Mapping[str, Any], run_path: Path, run_id: str, resume: str | None = None
) -> MlflowTracker | None:
    """The tracker of a run with ``[tracking] mlflow = true``, else None.

    ``config`` is the resolved config as JSON; ``resume``: the MLflow run to continue.
    """
    if not config.get("tracking", {}).get("mlflow"):
        return None
    return MlflowTracker.start(config, run_path, run_id, resume)


def end_tracking(
    tracker: MlflowTracker | None, config: Mapping[str, Any], run_path: Path
) -> str | None:
    """Log the finished run folder; register the model if ``register_as`` is set.

    Returns ``"NAME version V"`` when a version was registered.
    """
    if tracker is None:
        return None
    tracker.finish(run_path)
    name = config.get("tracking", {}).get("register_as")
    if not name:
        return None
    from murmura.ops.model_registry import register

    got = register(run_path, str(name), tracker.uri)
    log.info("run %s: registered as %s version %s", got.lineage.run_id, got.name, got.version)
    return f"{got.name} version {got.version}"
