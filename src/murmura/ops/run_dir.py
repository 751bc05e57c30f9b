"""The run directory ``runs/<run-id>/``: config, metrics.jsonl, plots, final model, summary.

One layout for a simulated run (``murmura run``) and a deployed one (``murmura server``):
``config.toml`` (the resolved config), ``metrics.jsonl`` (one line per round),
``summary.json``, ``accuracy.png`` and ``model.safetensors``, the final model, whose
safetensors metadata names the murmura version, the run id, the round, and the SHA-256 of
the canonical resolved config (``config_sha256``), so that a model file says where it came
from. ``write_outputs`` writes the last three for both.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from murmura import __version__
from murmura.ops.plots import plot_accuracy
from murmura.storage import save_tensors_atomically
from murmura.types import Failure, Layout, RoundMetrics, Vector, json_safe

MODEL_FILE, SUMMARY_FILE, CONFIG_FILE, METRICS_FILE = (
    "model.safetensors",
    "summary.json",
    "config.toml",
    "metrics.jsonl",
)
PLOT_FILE = "accuracy.png"


def new_run_id(name: str) -> str:
    """``<name>-<UTC time>-<random suffix>``: sortable and unique."""
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def config_sha256(resolved: Mapping[str, Any]) -> str:
    """SHA-256 of a resolved config as canonical JSON (sorted keys, no spaces, unset keys out).

    ``resolved`` is ``Config.model_dump(mode="json")``: the simulation and the coordinator hash
    the same text for the same config.
    """
    text = json.dumps(_drop_none(resolved), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def model_metadata(
    run_id: str, round_: int, resolved: Mapping[str, Any], **extra: str
) -> dict[str, str]:
    """The final model's safetensors metadata: version, run, round, config hash and ``extra``.

    The topology, strategy and task come from ``resolved`` when it has them.
    """
    meta = {
        "murmura.version": __version__,
        "murmura.run_id": run_id,
        "murmura.round": str(round_),
        "murmura.config_sha256": config_sha256(resolved),
    }
    for key, section, field in (
        ("murmura.topology", "topology", "kind"),
        ("murmura.strategy", "strategy", "name"),
        ("murmura.task", "task", "name"),
    ):
        value = resolved.get(section, {}).get(field)
        if value is not None:
            meta[key] = str(value)
    meta.update({f"murmura.{k}": v for k, v in extra.items()})
    return meta


def save_model(
    path: Path, weights: Vector, layout: Layout, metadata: Mapping[str, str] | None = None
) -> None:
    """Write named tensors as safetensors, atomically (temp file, fsync, rename)."""
    tensors = {k: np.ascontiguousarray(v) for k, v in layout.unflatten(weights).items()}
    save_tensors_atomically(path, tensors, metadata)


def write_config(path: Path, resolved: Mapping[str, Any]) -> None:
    """``config.toml``: the fully resolved config, re-runnable with ``murmura run``."""
    _write_text(path / CONFIG_FILE, tomli_w.dumps(_drop_none(resolved)))


def write_outputs(
    path: Path,
    weights: Vector,
    layout: Layout,
    rounds: Sequence[RoundMetrics],
    summary: Mapping[str, Any],
    metadata: Mapping[str, str],
) -> None:
    """The final outputs of a run, simulated or deployed: model, plot and summary.

    ``metadata`` (``model_metadata``) goes into ``model.safetensors``; ``summary.json`` gets
    the run id and the model's layout with ``summary``. Each file is replaced atomically.
    """
    save_model(path / MODEL_FILE, weights, layout, metadata)
    plot_accuracy(rounds, path / PLOT_FILE)
    body = {"run_id": metadata.get("murmura.run_id"), "layout": layout.to_dict(), **summary}
    _write_text(path / SUMMARY_FILE, json.dumps(json_safe(body), indent=2, allow_nan=False) + "\n")


def read_metrics(path: Path, last_round: int | None = None) -> list[RoundMetrics]:
    """The rounds of a ``metrics.jsonl`` (up to ``last_round``), for plots and summaries.

    A line cut off by a crash is skipped; only the fields a plot or a summary reads are kept.
    """
    out: list[RoundMetrics] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or not isinstance(row.get("round"), int):
            continue
        if last_round is not None and row["round"] > last_round:
            continue
        out.append(round_from_json(row))
    return out


def round_from_json(row: Mapping[str, Any]) -> RoundMetrics:
    """A ``RoundMetrics`` back from its ``to_json`` line (the extra entries in ``extra``)."""
    known = {
        "round", "participants", "failures", "train_loss", "test_loss", "test_accuracy",
        "seconds", "federated_loss", "federated_accuracy", "federated_clients",
    }  # fmt: skip

    def num(key: str) -> float | None:
        v = row.get(key)
        return float(v) if isinstance(v, int | float | str) and v is not None else None

    fed = row.get("federated_clients")
    return RoundMetrics(
        int(row["round"]),
        int(row.get("participants", 0)),
        failures=[Failure(str(f["node"]), str(f["reason"])) for f in row.get("failures", [])],
        train_loss=num("train_loss"),
        test_loss=num("test_loss"),
        test_accuracy=num("test_accuracy"),
        seconds=float(row.get("seconds", 0.0)),
        extra={k: v for k, v in row.items() if k not in known},
        federated_loss=num("federated_loss"),
        federated_accuracy=num("federated_accuracy"),
        federated_clients=int(fed) if isinstance(fed, int) else None,
    )


def keep_metrics(path: Path, last_round: int) -> None:
    """Drop the lines of rounds after ``last_round`` from a metrics file (atomically).

    A resumed run runs those rounds again and appends their lines anew.
    """
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            round_ = json.loads(line).get("round")
        except (ValueError, AttributeError):
            continue  # a line cut off by the crash
        if isinstance(round_, int) and round_ <= last_round:
            kept.append(line + "\n")
    _write_text(path, "".join(kept))


class RunDirectory:
    """Writes everything a simulated run leaves behind, as it happens."""

    def __init__(self, path: Path, run_id: str, rounds: list[RoundMetrics] | None = None) -> None:
        self.run_id, self.path = run_id, path
        self.rounds: list[RoundMetrics] = rounds or []

    @classmethod
    def create(cls, root: str | Path, name: str) -> RunDirectory:
        """A new ``root/<run-id>/`` for a run called ``name``."""
        run_id = new_run_id(name)
        path = Path(root) / run_id
        path.mkdir(parents=True, exist_ok=False)
        return cls(path, run_id)

    @classmethod
    def reopen(cls, path: Path, last_round: int) -> RunDirectory:
        """An existing run folder, resumed after ``last_round``: later metrics lines dropped."""
        keep_metrics(path / METRICS_FILE, last_round)
        return cls(path, path.name, read_metrics(path / METRICS_FILE))

    def write_config(self, resolved: Mapping[str, Any]) -> None:
        """The fully resolved config, re-runnable with ``murmura run``."""
        write_config(self.path, resolved)

    def log_round(self, metrics: RoundMetrics) -> None:
        """Append one line to ``metrics.jsonl``."""
        self.rounds.append(metrics)
        with open(self.path / METRICS_FILE, "a") as fh:
            fh.write(json.dumps(metrics.to_json(), allow_nan=False) + "\n")

    def finish(
        self,
        weights: Vector,
        layout: Layout,
        summary: Mapping[str, Any],
        metadata: Mapping[str, str],
    ) -> None:
        """Final model, plot and summary."""
        write_outputs(self.path, weights, layout, self.rounds, summary, metadata)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _drop_none(data: Mapping[str, Any]) -> dict[str, Any]:
    """TOML has no null: leave unset optional keys out."""
    return {
        k: _drop_none(v) if isinstance(v, Mapping) else v for k, v in data.items() if v is not None
    }
