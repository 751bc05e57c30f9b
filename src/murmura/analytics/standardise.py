"""Feature standardisation fitted from federated statistics, so no site shares a raw value.

Every site gets the same ``(mean, scale)`` and maps ``x -> (x - mean) / scale``: the scaling
a standard scaler fitted on the pooled data would apply, learnt from the sites' sums alone.
A task takes the pair as a plain argument; ``[stats] standardise = true`` fits it for the
``tabular`` task before training (``murmura.analytics.fit_scaling``)::

    stats = simulate_statistics(data, plan)          # or the deployed statistics round
    mean, scale = standardisation(stats)
    task = TabularTask(..., mean=mean, scale=scale)  # applied to every site's rows

Deployed, the coordinator sends the task's pair in every FIT instruction under
``STANDARDISE_KEY`` (``scaling_to_json``): aggregates only, a few numbers per feature.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from murmura.analytics.result import FederatedStats
from murmura.analytics.summary import F64
from murmura.errors import ConfigError, InstructionRejected

if TYPE_CHECKING:
    from murmura.config import Config
    from murmura.data.schema import TabularSchema

MIN_SCALE = 1e-12
"""A feature whose standard deviation is below this is constant: its scale is 1."""
STANDARDISE_KEY = "standardise"
"""The FIT instruction's config key that carries the task's fitted ``mean``/``scale`` (JSON)."""
MAX_SCALING_CHARS = 1_000_000
"""Longest ``STANDARDISE_KEY`` text a worker parses (about 25,000 features)."""


def scaling(count: float, mean: F64, variance: F64) -> tuple[F64, F64]:
    """``(mean, scale)`` per feature: the mean and standard deviation (1 if constant).

    Raises ``ConfigError`` when there are no rows (nothing to fit).
    """
    mean, variance = np.asarray(mean, np.float64), np.asarray(variance, np.float64)
    if not count > 0 or not (np.isfinite(mean).all() and np.isfinite(variance).all()):
        raise ConfigError("cannot fit a standardisation: the statistics have no rows")
    std = np.sqrt(np.maximum(variance, 0.0))
    return mean, np.where(std > MIN_SCALE, std, 1.0)


def standardisation(stats: FederatedStats) -> tuple[F64, F64]:
    """``(mean, scale)`` of every feature of ``stats`` (see ``scaling``)."""
    return scaling(stats.count, stats.mean, stats.variance)


def numeric_columns(schema: TabularSchema) -> NDArray[np.int64]:
    """Encoded columns of the schema's numeric features (categorical ones are one-hot blocks)."""
    starts = np.cumsum([0, *(f.width for f in schema.features)])[:-1]
    cols = [a for a, f in zip(starts, schema.features, strict=True) if not f.categorical]
    return np.asarray(cols, dtype=np.int64)


def task_scaling(
    schema: Mapping[str, Any], count: float, mean: F64, variance: F64
) -> dict[str, list[float]]:
    """The ``tabular`` task's ``mean``/``scale`` args from statistics of its encoded columns."""
    from murmura.data.schema import TabularSchema, schema_from_mapping

    table = schema_from_mapping(schema)
    if not isinstance(table, TabularSchema):
        raise ConfigError("stats.standardise = true needs task.args.schema.kind = 'tabular'")
    if len(mean) != table.input_dim:
        raise ConfigError(
            f"the statistics have {len(mean)} features, the schema encodes {table.input_dim}"
        )
    m, s = scaling(count, mean, variance)
    cols = numeric_columns(table)
    return {"mean": m[cols].tolist(), "scale": s[cols].tolist()}


def standardised_config(cfg: Config, stats: FederatedStats) -> Config:
    """``cfg`` with its task's scaling fitted from ``stats`` (standardise off: it is fitted)."""
    args = task_scaling(cfg.task.args["schema"], stats.count, stats.mean, stats.variance)
    task = cfg.task.model_copy(update={"args": {**cfg.task.args, **args}})
    return cfg.model_copy(
        update={"task": task, "stats": cfg.stats.model_copy(update={"standardise": False})}
    )


def scaling_to_json(args: Mapping[str, list[float]]) -> str:
    """Compact JSON of a task's ``mean``/``scale``: what a FIT instruction carries."""
    body = {"mean": list(args["mean"]), "scale": list(args["scale"])}
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def scaling_from_json(text: object) -> dict[str, list[float]]:
    """Parse ``scaling_to_json``'s text from the wire; anything else is ``InstructionRejected``."""
    if not isinstance(text, str) or len(text) > MAX_SCALING_CHARS:
        raise InstructionRejected(f"{STANDARDISE_KEY} is not a standardisation's JSON text")
    try:
        body = json.loads(text)
        mean, scale = body["mean"], body["scale"]
    except (ValueError, KeyError, TypeError):
        raise InstructionRejected(f"{STANDARDISE_KEY}: malformed JSON") from None
    if not (isinstance(body, dict) and set(body) == {"mean", "scale"}):
        raise InstructionRejected(f"{STANDARDISE_KEY}: holds exactly 'mean' and 'scale'")
    if not (isinstance(mean, list) and isinstance(scale, list) and len(mean) == len(scale)):
        raise InstructionRejected(f"{STANDARDISE_KEY}: mean and scale of the same length")
    for v in (*mean, *scale):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InstructionRejected(f"{STANDARDISE_KEY}: {v!r} is not a finite number")
    if any(s <= 0 for s in scale):
        raise InstructionRejected(f"{STANDARDISE_KEY}: every scale must be > 0")
    return {"mean": [float(v) for v in mean], "scale": [float(v) for v in scale]}
