"""A run's final model in MLflow's Model Registry, with its lineage; and checking it later.

``register`` puts the run folder's ``model.safetensors``, its model card (``MODEL_CARD.md``)
and ``lineage.json`` under ``registry/<name>/`` in the run's MLflow run (a run that was not
tracked is logged first, from its ``metrics.jsonl``) and creates a new version of ``name``
from them, with the lineage as the version's tags and the card as its description. The tags
live in the registry's database, apart from the artifacts: ``verify`` re-hashes the
artifacts against them and, given the coordinator's state dir, checks the signed audit
ledger, that it still holds the recorded head, and that its last ``round_end`` of the run
recorded these very weights.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from murmura.errors import LineageError, TrackingError
from murmura.ops.lineage import (
    MODEL_FILE,
    Lineage,
    RunFiles,
    flat_sha256,
    read_layout,
    read_lineage,
)
from murmura.ops.model_card import render_card
from murmura.ops.tracking import RUN_TAG, MlflowTracker, store_uri
from murmura.storage import file_sha256
from murmura.types import Layout

CARD_FILE, LINEAGE_FILE, ARTIFACT_ROOT = "MODEL_CARD.md", "lineage.json", "registry"


@dataclass(frozen=True, slots=True)
class Registered:
    """A model version and the lineage it was registered (or verified) with."""

    name: str
    version: str
    source: str
    lineage: Lineage


def register(run_path: Path, name: str, tracking_uri: str | None = None) -> Registered:
    """Register ``run_path``'s final model as a new version of ``name``, with its lineage."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    files = RunFiles.read(run_path)
    lineage = read_lineage(files)
    layout = read_layout(files.summary, run_path)
    card = render_card(name, lineage, files.config, files.summary)
    uri = store_uri(run_path.parent, tracking_uri or files.config.get("tracking", {}).get(
        "tracking_uri"))  # fmt: skip
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        mlflow_run = _tracked_run(client, files, lineage.run_id, uri)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            shutil.copyfile(run_path / MODEL_FILE, folder / MODEL_FILE)
            (folder / CARD_FILE).write_text(card)
            pairs = [[n, list(shape)] for n, shape in zip(layout.names, layout.shapes, strict=True)]
            body = {"lineage": asdict(lineage), "layout": pairs}  # a list: the order matters
            (folder / LINEAGE_FILE).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
            client.log_artifacts(mlflow_run, tmp, f"{ARTIFACT_ROOT}/{name}")
        source = f"{client.get_run(mlflow_run).info.artifact_uri}/{ARTIFACT_ROOT}/{name}"
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(name)
        version = client.create_model_version(
            name, source, run_id=mlflow_run, tags=lineage.tags(), description=card
        )
    except MlflowException as exc:
        raise TrackingError(f"MLflow at {uri}: {exc.message}") from None
    return Registered(name, str(version.version), source, lineage)


def verify(name: str, version: str, tracking_uri: str, state_dir: Path | None = None) -> Registered:
    """Re-hash version ``version`` of ``name`` and check it against its lineage.

    ``state_dir``: also against the coordinator's audit ledger. ``LineageError`` says the
    first thing that differs.
    """
    import mlflow.artifacts
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        mv = client.get_model_version(name, version)
        lineage = Lineage.from_tags(mv.tags)
        with tempfile.TemporaryDirectory() as tmp:
            got = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=mv.source, dst_path=tmp, tracking_uri=tracking_uri
            ))  # fmt: skip
            check_files(got, lineage)
    except MlflowException as exc:
        raise TrackingError(f"MLflow at {tracking_uri}: {exc.message}") from None
    if state_dir is not None:
        check_ledger(state_dir, lineage)
    return Registered(name, str(mv.version), str(mv.source), lineage)


def check_files(folder: Path, lineage: Lineage) -> None:
    """The registered model file, and its ``lineage.json``, agree with ``lineage``."""
    model = folder / MODEL_FILE
    if not model.is_file():
        raise LineageError(f"the registered artifacts have no {MODEL_FILE}")
    digest = file_sha256(model)
    if digest != lineage.weights_sha256:
        raise LineageError(
            f"{MODEL_FILE} has SHA-256 {digest}, the lineage says {lineage.weights_sha256}: "
            "the registered weights were changed"
        )
    try:
        body: dict[str, Any] = json.loads((folder / LINEAGE_FILE).read_text())
        pairs = body["layout"]
        layout = Layout(
            tuple(str(n) for n, _ in pairs), tuple(tuple(int(d) for d in s) for _, s in pairs)
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LineageError(f"{LINEAGE_FILE} cannot be read: {exc}") from None
    if body.get("lineage") != json.loads(json.dumps(asdict(lineage))):
        raise LineageError(f"{LINEAGE_FILE} differs from the version's lineage tags")
    flat = flat_sha256(model, layout)
    if flat != lineage.model_sha256:
        raise LineageError(f"the weights hash to {flat}, the lineage says {lineage.model_sha256}")


def check_ledger(state_dir: Path, lineage: Lineage) -> None:
    """The coordinator's ledger verifies, holds the lineage's head and recorded these weights."""
    from murmura.ops.audit import LEDGER_FILE, Head, read_records, verify_state_dir

    if lineage.audit_head is None:
        raise LineageError("the lineage has no audit ledger head: the model was not trained by a "
                           "coordinator (a simulated run); verify it without --state")  # fmt: skip
    verdict = verify_state_dir(state_dir, heads=[Head.parse(lineage.audit_head)])
    if not verdict.ok:
        raise LineageError(f"audit ledger record {verdict.bad_seq}: {verdict.reason}")
    ends = [
        r for r in read_records(state_dir / LEDGER_FILE, lineage.run_id) if r.event == "round_end"
    ]
    if not ends:
        raise LineageError(f"the audit ledger has no round of run {lineage.run_id}")
    last = ends[-1]
    recorded = last.details().get("model_sha256")
    if last.round != lineage.rounds or recorded != lineage.model_sha256:
        raise LineageError(
            f"the audit ledger's last round of run {lineage.run_id} is round {last.round} with "
            f"model {recorded}; the lineage says round {lineage.rounds}, model "
            f"{lineage.model_sha256}"
        )


def _tracked_run(client: Any, files: RunFiles, run_id: str, uri: str) -> str:
    """The MLflow run that tracked murmura run ``run_id``; logged now if there is none."""
    experiment = files.config.get("tracking", {}).get("experiment", "murmura")
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        runs = client.search_runs(
            [found.experiment_id], f"tags.`{RUN_TAG}` = '{run_id}'", max_results=1
        )
        if runs:
            return str(runs[0].info.run_id)
    tracker = MlflowTracker.start(files.config, files.path, run_id, uri=uri)
    for line in (files.path / "metrics.jsonl").read_text().splitlines():
        try:
            tracker.log_round(json.loads(line))
        except ValueError:
            continue  # a line cut off by a crash
    tracker.finish(files.path)
    return tracker.mlflow_run_id
