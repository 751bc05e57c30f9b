"""A final model's lineage, read from its run folder: what it is and what it came from.

The weights' SHA-256 (of ``model.safetensors``, and of the flat float32 vector, which is what
the coordinator's audit ledger records in each round's ``round_end``), the config hash, the
run, its rounds, who trained it (a simulation's client count, a deployment's node ids), the
privacy guarantee, secure aggregation, the aggregator and the ledger head. Everything comes
from the files the run left (``config.toml``, ``summary.json``, ``model.safetensors``) and,
for a deployed run, from its coordinator's state dir (``<state>/runs/<run-id>``).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from murmura.errors import LineageError, MurmuraError
from murmura.storage import file_sha256
from murmura.types import Layout

MODEL_FILE, SUMMARY_FILE, CONFIG_FILE = "model.safetensors", "summary.json", "config.toml"
CONFIG_HASH_KEY = "murmura.config_sha256"
"""The final model's safetensors metadata key holding the config hash, when it has one."""
TAG_PREFIX = "murmura.lineage."


@dataclass(frozen=True, slots=True)
class Lineage:
    """Where a final model came from; every field goes into the registry as a tag."""

    run_id: str
    weights_sha256: str
    """SHA-256 of the ``model.safetensors`` file."""
    model_sha256: str
    """SHA-256 of the weights as one little-endian float32 vector in the model's layout."""
    config_sha256: str
    rounds: int
    secure_aggregation: bool
    aggregator: str
    aggregator_args: dict[str, Any] = field(default_factory=dict)
    clients: int | None = None
    """Simulated clients (simulation only)."""
    nodes: list[str] | None = None
    """Deployed nodes that contributed to a completed round (deployment only)."""
    epsilon: float | None = None
    delta: float | None = None
    audit_head: str | None = None
    """The coordinator's ledger head at the end of the run, ``SEQ:HASH`` (deployment only)."""

    def tags(self) -> dict[str, str]:
        """Registry tags: ``murmura.lineage.<field>``, values as JSON text."""
        return {TAG_PREFIX + k: json.dumps(v, sort_keys=True) for k, v in asdict(self).items()}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Lineage:
        """Read back ``tags()``; ``LineageError`` if one is missing or malformed."""
        try:
            values = {k: json.loads(tags[TAG_PREFIX + k]) for k in cls.__dataclass_fields__}
            return cls(**values)
        except (KeyError, ValueError, TypeError) as exc:
            raise LineageError(f"the version's lineage tags are incomplete: {exc}") from None


def flat_sha256(path: Path, layout: Layout) -> str:
    """SHA-256 of a safetensors model as one little-endian float32 vector in ``layout`` order.

    The same digest as ``murmura.node.checkpoint.weights_sha256`` of the flat weights.
    """
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
        flat = layout.flatten({n: tensors[n] for n in layout.names})
    except (OSError, ValueError, KeyError) as exc:  # a changed byte may break the header
        raise LineageError(f"{path}: not the model of this lineage: {exc}") from None
    return hashlib.sha256(np.ascontiguousarray(flat, dtype="<f4").tobytes()).hexdigest()


def read_layout(summary: Mapping[str, Any], where: Path) -> Layout:
    """The model's layout, as ``summary.json`` lists it (names in order, shapes)."""
    raw = summary.get("layout")
    if not isinstance(raw, dict) or not raw:
        raise LineageError(f"{where}: no model layout in {SUMMARY_FILE}")
    return Layout(tuple(raw), tuple(tuple(int(d) for d in s) for s in raw.values()))


def config_sha256(config: Mapping[str, Any]) -> str:
    """SHA-256 of a resolved config as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def coordinator_state(run_path: Path) -> Path | None:
    """The state dir of a deployed run's folder (``<state>/runs/<run-id>``), else None."""
    state = run_path.resolve().parent.parent
    if run_path.resolve().parent.name == "runs" and (state / "state.sqlite").exists():
        return state
    return None


@dataclass(frozen=True, slots=True)
class RunFiles:
    """What a finished run folder holds, read once."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    metadata: dict[str, str]

    @classmethod
    def read(cls, path: Path) -> RunFiles:
        """Read ``config.toml``, ``summary.json`` and the model's metadata of a run folder."""
        from safetensors import SafetensorError, safe_open

        state = coordinator_state(path)
        names = (SUMMARY_FILE, MODEL_FILE) + ((CONFIG_FILE,) if state is None else ())
        for name in names:
            if not (path / name).is_file():
                raise LineageError(f"{path}: no {name}; is it a finished murmura run folder?")
        try:
            summary = json.loads((path / SUMMARY_FILE).read_text())
            if (path / CONFIG_FILE).is_file():
                config = tomllib.loads((path / CONFIG_FILE).read_text())
            else:  # a coordinator's run folder without one: the config in its state
                config = _state_config(path, str(summary.get("run_id", path.name)))
            with safe_open(str(path / MODEL_FILE), "np") as fh:
                metadata = dict(fh.metadata() or {})
        except (OSError, ValueError, SafetensorError, MurmuraError) as exc:
            raise LineageError(f"{path}: cannot read the run's files: {exc}") from None
        return cls(path, config, summary, metadata)


def _state_config(path: Path, run_id: str) -> dict[str, Any]:
    from murmura.node.state import StateStore

    state = coordinator_state(path)
    assert state is not None
    store = StateStore(state / "state.sqlite")
    try:
        return store.run_config(run_id)
    finally:
        store.close()


def read_lineage(files: RunFiles) -> Lineage:
    """The lineage of a finished run's final model, from its folder (and coordinator state)."""
    cfg, summary, path = files.config, files.summary, files.path
    model = path / MODEL_FILE
    strategy = cfg.get("strategy", {})
    nodes, clients = None, int(cfg.get("partition", {}).get("num_clients", 0)) or None
    state = coordinator_state(path)
    if state is not None:
        from murmura.node.state import StateStore

        store = StateStore(state / "state.sqlite")
        try:
            nodes, clients = store.contributors(str(summary.get("run_id", path.name))), None
        finally:
            store.close()
    epsilon, delta = summary.get("epsilon"), summary.get("delta")
    return Lineage(
        run_id=str(summary.get("run_id", path.name)),
        weights_sha256=file_sha256(model),
        model_sha256=flat_sha256(model, read_layout(summary, path)),
        config_sha256=files.metadata.get(CONFIG_HASH_KEY) or config_sha256(cfg),
        rounds=int(summary.get("rounds", 0)),
        secure_aggregation=bool(cfg.get("secagg", {}).get("enabled", False)),
        aggregator=str(strategy.get("aggregator", "weighted_mean")),
        aggregator_args=dict(strategy.get("aggregator_args", {})),
        clients=clients,
        nodes=nodes,
        epsilon=float(epsilon) if isinstance(epsilon, int | float) else None,
        delta=float(delta) if isinstance(delta, int | float) else None,
        audit_head=summary.get("audit_head"),
    )
