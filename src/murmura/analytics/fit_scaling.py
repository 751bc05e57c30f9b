"""``[stats] standardise``: the ``tabular`` task's scaling fitted from the statistics round.

Simulated (``fit_simulated``): the statistics round runs over the clients' raw rows, then the
task is built with the fitted ``mean``/``scale``, so every client standardises the same way.
Deployed (``deployed_scaling``): the coordinator reads the same figures back from the
``stats.json`` its statistics phase wrote (also after a restart) and sends the task's pair in
every FIT instruction; each site applies it to its own rows (``murmura.node.standardised_site``).
JSON keeps every float64 exactly, so both give the same ``mean`` and ``scale``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from murmura.analytics.report import STATS_FILE
from murmura.analytics.result import FederatedStats
from murmura.analytics.standardise import (
    STANDARDISE_KEY,
    scaling_to_json,
    standardised_config,
    task_scaling,
)
from murmura.errors import MurmuraError

if TYPE_CHECKING:
    from murmura.config import Config


def fit_simulated(cfg: Config) -> tuple[Config, FederatedStats]:
    """``cfg`` with the task's scaling fitted by a statistics round over its clients, and it."""
    from murmura.analytics.cli import run_statistics
    from murmura.compose.workload import federate
    from murmura.tasks import load_task

    _, data = federate(cfg, load_task(cfg.task.name, **cfg.task.args))
    stats = run_statistics(cfg, data)
    return standardised_config(cfg, stats), stats


def deployed_scaling(cfg: Config, folder: Path) -> dict[str, str]:
    """The FIT config entry that gives every site the scaling fitted from ``folder/stats.json``.

    Raises ``MurmuraError`` when the run has no statistics (no site answered them).
    """
    path = folder / STATS_FILE
    try:
        body = json.loads(path.read_text())
        features = body["features"]
        mean = np.array([f["mean"] for f in features], dtype=np.float64)
        variance = np.array([f["variance"] for f in features], dtype=np.float64)
        count = float(body["count"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MurmuraError(
            f"[stats] standardise: no statistics to fit the scaling from ({path}: {exc}); "
            "did no site answer the statistics round?"
        ) from None
    args = task_scaling(cfg.task.args["schema"], count, mean, variance)
    return {STANDARDISE_KEY: scaling_to_json(args)}
