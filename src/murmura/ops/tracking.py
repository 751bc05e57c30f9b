"""Experiment tracking with MLflow: one tracker for ``murmura run`` and ``murmura server``.

The tracker is fed the same per-round line that goes into ``metrics.jsonl``, so MLflow's
metrics equal the file line for line: every number of the line (a list, ``failures``, counts
its entries) is a metric with ``step = round``. The resolved config, flattened, goes in as
params; topology, strategy, aggregator, privacy mode and secure aggregation as tags; the run
folder's files (not its checkpoints) as artifacts at the end. Steps already logged are never
logged again, so a resumed coordinator continues its MLflow run without duplicates, and a
round the store missed (a tracking server that was down) is sent with the next one.

The default store is local: ``mlflow.db`` (SQLite) and ``mlartifacts/`` in the run folder's
parent; ``tracking_uri`` points elsewhere, e.g. a tracking server. MLflow is imported only
here and in ``murmura.ops.model_registry``, and only when tracking is on.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from murmura.errors import ConfigError, TrackingError

log = logging.getLogger(__name__)

STORE_FILE, ARTIFACT_DIR = "mlflow.db", "mlartifacts"
RUN_TAG = "murmura.run_id"
"""MLflow tag naming the murmura run id: how ``registry register`` finds a tracked run."""
STEP_KEY = "participants"
"""A metric every round line has: its last step is the last round logged."""
MAX_PARAM = 6000
"""MLflow's longest param value; longer ones are cut (config.toml, an artifact, has all)."""
_BATCH = 100
"""MLflow's most params (and tags) per ``log_batch``."""
_TAGS = (
    ("murmura.topology", ("topology", "kind")),
    ("murmura.strategy", ("strategy", "name")),
    ("murmura.aggregator", ("strategy", "aggregator")),
    ("murmura.privacy", ("privacy", "mode")),
    ("murmura.secure_aggregation", ("secagg", "enabled")),
    ("murmura.task", ("task", "name")),
)


def require_mlflow() -> None:
    """Raise ``ConfigError`` saying which extra to install when MLflow is missing."""
    try:
        found = importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError(
            "tracking.mlflow = true needs MLflow, which is not installed: "
            "pip install 'murmura[mlflow]'"
        )


def store_uri(parent: Path, tracking_uri: str | None = None) -> str:
    """``tracking_uri``, else the local SQLite store in ``parent`` (a run folder's parent)."""
    return tracking_uri or f"sqlite:///{(parent / STORE_FILE).resolve()}"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested tables as dotted keys with text values: ``{"strategy.name": "fedavg", ...}``.

    Unset keys (None) are left out, as in ``config.toml``.
    """
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif value is not None:
            out[name] = str(value)[:MAX_PARAM]
    return out


def round_values(row: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The metrics of one ``metrics.jsonl`` line, ``round`` excepted (it is the step).

    Numbers as they are (booleans as 0/1, "inf"/"nan" as floats), a list as its length,
    a nested mapping with dotted keys; None and other text are left out.
    """
    out: dict[str, float] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if name == "round":
            continue
        if isinstance(value, bool | int | float):
            out[name] = float(value)
        elif isinstance(value, str) and value in ("inf", "-inf", "nan"):
            out[name] = float(value)
        elif isinstance(value, list):
            out[name] = float(len(value))
        elif isinstance(value, Mapping):
            out.update(round_values(value, name + "."))
    return out


def run_tags(config: Mapping[str, Any], run_id: str) -> dict[str, str]:
    """Tags that find a run: its murmura id, topology, strategy, aggregator, privacy, SecAgg."""
    tags = {RUN_TAG: run_id}
    for tag, (section, key) in _TAGS:
        value = config.get(section, {}).get(key)
        if value is not None:
            tags[tag] = str(value).lower() if isinstance(value, bool) else str(value)
    return tags


class MlflowTracker:
    """One MLflow run, fed one ``metrics.jsonl`` line per round."""

    def __init__(self, client: Any, uri: str, mlflow_run_id: str, last_step: int = 0) -> None:
        self.client, self.uri, self.mlflow_run_id = client, uri, mlflow_run_id
        self.last_step = last_step
        """The last round logged: a round at or before it is not logged again."""
        self.ended = False
        self._pending: list[Mapping[str, Any]] = []

    @classmethod
    def start(
        cls,
        config: Mapping[str, Any],
        run_path: Path,
        run_id: str,
        resume: str | None = None,
        uri: str | None = None,
    ) -> MlflowTracker:
        """Open the MLflow run of murmura run ``run_id`` (``config`` resolved, as JSON).

        ``resume``: an MLflow run id to continue (a resumed coordinator); else a new run
        with the config as params and the tags. ``uri``: the store (default: the config's).
        """
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        tracking = config.get("tracking", {})
        uri = uri or store_uri(run_path.parent, tracking.get("tracking_uri"))
        try:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            if resume is not None:
                client.update_run(resume, status="RUNNING")
                return cls(client, uri, resume, _last_step(client, resume))
            experiment = _experiment(client, tracking.get("experiment", "murmura"), run_path, uri)
            run = client.create_run(experiment, run_name=run_id, tags=run_tags(config, run_id))
            tracker = cls(client, uri, run.info.run_id)
            for params in _chunks(sorted(flatten(config).items())):
                tracker._batch(params=params)
        except MlflowException as exc:
            raise TrackingError(f"MLflow at {uri}: {exc.message}") from None
        log.info("run %s: tracked in MLflow run %s at %s", run_id, run.info.run_id, uri)
        return tracker

    def log_round(self, row: Mapping[str, Any]) -> None:
        """Log one ``metrics.jsonl`` line with ``step = row["round"]``, once per step.

        A store that fails is warned about and the line kept for the next call: tracking
        never stops a run.
        """
        from mlflow.exceptions import MlflowException

        self._pending.append(row)
        try:
            while self._pending:
                step = int(self._pending[0]["round"])
                if step > self.last_step:
                    self._metrics(round_values(self._pending[0]), step)
                    self.last_step = step
                self._pending.pop(0)
        except (MlflowException, OSError) as exc:
            log.warning("round %s: MLflow did not take the metrics (retried next round): %s",
                        row.get("round"), exc)  # fmt: skip

    def finish(self, run_path: Path, status: str = "FINISHED") -> None:
        """Log the run folder's files (its checkpoints excepted) and end the MLflow run."""
        from mlflow.exceptions import MlflowException

        try:
            for path in sorted(run_path.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    self.client.log_artifact(self.mlflow_run_id, str(path))
            self.client.set_terminated(self.mlflow_run_id, status)
            self.ended = True
        except (MlflowException, OSError) as exc:
            raise TrackingError(f"MLflow run {self.mlflow_run_id}: {exc}") from None

    def stop(self, status: str = "KILLED") -> None:
        """End the MLflow run without artifacts, unless ended (the run failed or stopped)."""
        from mlflow.exceptions import MlflowException

        if self.ended:
            return
        try:
            self.client.set_terminated(self.mlflow_run_id, status)
            self.ended = True
        except (MlflowException, OSError) as exc:
            log.warning("MLflow run %s not marked %s: %s", self.mlflow_run_id, status, exc)

    def _metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):  # MLflow's most metrics per batch
            self.client.log_batch(self.mlflow_run_id, metrics=metrics[i : i + 1000])

    def _batch(self, params: Iterable[tuple[str, str]]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.mlflow_run_id, params=[Param(k, v) for k, v in params])


def _experiment(client: Any, name: str, run_path: Path, uri: str) -> str:
    """The id of experiment ``name``, created if new (artifacts beside a local store)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    where = None
    if uri.startswith("sqlite:///"):
        where = (Path(uri.removeprefix("sqlite:///")).parent / ARTIFACT_DIR).resolve().as_uri()
    return str(client.create_experiment(name, artifact_location=where))


def _last_step(client: Any, mlflow_run_id: str) -> int:
    history = client.get_metric_history(mlflow_run_id, STEP_KEY)
    return max((int(m.step) for m in history), default=0)


def _chunks(items: list[tuple[str, str]]) -> Iterable[list[tuple[str, str]]]:
    for i in range(0, len(items), _BATCH):
        yield items[i : i + _BATCH]
