"""The run directory ``runs/<run-id>/``: config, metrics.jsonl, plots, final model, summary."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from murmura.ops.plots import plot_accuracy
from murmura.storage import save_tensors_atomically
from murmura.types import Layout, RoundMetrics, Vector, json_safe


def new_run_id(name: str) -> str:
    """``<name>-<UTC time>-<random suffix>``: sortable and unique."""
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def save_model(path: Path, weights: Vector, layout: Layout) -> None:
    """Write named tensors as safetensors, atomically (temp file, fsync, rename)."""
    tensors = {k: np.ascontiguousarray(v) for k, v in layout.unflatten(weights).items()}
    save_tensors_atomically(path, tensors)


class RunDirectory:
    """Writes everything a run leaves behind, as it happens."""

    def __init__(self, root: str | Path, name: str) -> None:
        self.run_id = new_run_id(name)
        self.path = Path(root) / self.run_id
        self.path.mkdir(parents=True, exist_ok=False)
        self.rounds: list[RoundMetrics] = []

    def write_config(self, resolved: Mapping[str, Any]) -> None:
        """The fully resolved config, re-runnable with ``murmura run``."""
        (self.path / "config.toml").write_text(tomli_w.dumps(_drop_none(resolved)))

    def log_round(self, metrics: RoundMetrics) -> None:
        """Append one line to ``metrics.jsonl``."""
        self.rounds.append(metrics)
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(metrics.to_json(), allow_nan=False) + "\n")

    def finish(self, weights: Vector, layout: Layout, summary: Mapping[str, Any]) -> None:
        """Final model, plot and summary."""
        save_model(self.path / "model.safetensors", weights, layout)
        plot_accuracy(self.rounds, self.path / "accuracy.png")
        body = {"run_id": self.run_id, "layout": layout.to_dict(), **summary}
        text = json.dumps(json_safe(body), indent=2, allow_nan=False)
        (self.path / "summary.json").write_text(text + "\n")


def _drop_none(data: Mapping[str, Any]) -> dict[str, Any]:
    """TOML has no null: leave unset optional keys out."""
    return {
        k: _drop_none(v) if isinstance(v, Mapping) else v for k, v in data.items() if v is not None
    }
