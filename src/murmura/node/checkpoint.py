"""The coordinator's round checkpoint: the model and the strategy's state in one file.

One safetensors file per round holds the model's tensors and, when the strategy keeps state
between rounds (``Stateful``: privacy accountant, adaptive clip norm, server optimiser
moments, ...), that state: its structure as JSON in the file's metadata, its numpy arrays as
extra tensors named ``__strategy_state__/<i>`` (exact, and no size limit from the header).
Model and state reach the disk by one atomic rename (temp file, fsync, rename, fsync of the
folder), so a crash leaves the old file or the new one: a model can never be read back with
the state of another round. The file carries the SHA-256 of its own content and the
coordinator's state records the file's SHA-256: a flipped byte or a cut-off file is found
when it is read (``murmura.node.resume``). No pickle: JSON and raw tensors only.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from murmura.errors import CheckpointError
from murmura.storage import load_tensors_verified, save_tensors_atomically
from murmura.strategy.hooks import Stateful
from murmura.types import Layout, Vector

STATE_PREFIX = "__strategy_state__/"
_FORMAT, _STRATEGY, _STATE = "murmura.checkpoint", "murmura.strategy", "murmura.strategy_state"
_TENSOR, _FLOAT = "__tensor__", "__float__"
_NON_FINITE = ("inf", "-inf", "nan")
Array = NDArray[Any]


@dataclass(frozen=True, slots=True)
class SavedState:
    """A strategy's state as checkpointed, with the name of the strategy class that saved it."""

    strategy: str
    state: dict[str, Any]


def checkpoint_path(run_path: Path, round_: int) -> Path:
    """Where the model after ``round_`` is kept (round 0: the initial model)."""
    return run_path / "checkpoints" / f"round-{round_:05d}.safetensors"


def prune_checkpoints(folder: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` round checkpoints in ``folder``; return them.

    Round 0 (the initial model, the last fallback of a resume) is always kept, and so are
    files set aside as ``*.damaged``. ``keep_last`` 0 keeps everything. Call it only after
    the newest checkpoint is written and recorded as completed: it is the one a resume needs.
    """
    if keep_last <= 0:
        return []
    rounds = sorted(
        (int(p.name[6:11]), p)
        for p in folder.glob("round-*.safetensors")
        if p.name[6:11].isdigit() and len(p.name) == len("round-00000.safetensors")
    )
    old = [p for r, p in rounds[:-keep_last] if r > 0]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def write_checkpoint(
    path: Path,
    weights: Vector,
    layout: Layout,
    state: SavedState | None = None,
    extra: Mapping[str, str] | None = None,
    *,
    durable: bool = True,
) -> str:
    """Write the model (and the strategy's state) atomically; return the weights' SHA-256.

    ``extra`` goes into the file's metadata as is (the audit ledger's head); ``durable``
    False skips the fsyncs (``storage.save_tensors_atomically``).
    """
    tensors: dict[str, Array] = {
        k: np.ascontiguousarray(v) for k, v in layout.unflatten(weights).items()
    }
    metadata = {**(extra or {}), _FORMAT: "1"}
    if state is not None:
        text, arrays = encode_state(state.state)
        tensors.update(arrays)
        metadata.update({_STRATEGY: state.strategy, _STATE: text})
    save_tensors_atomically(path, tensors, metadata, durable=durable)
    return weights_sha256(weights)


def read_checkpoint(path: Path | str, layout: Layout) -> tuple[Vector, SavedState | None]:
    """The model and the strategy's state (``None`` if none was saved) of a checkpoint.

    ``CheckpointError`` if the file is missing, cut off, differs from the content digest it
    was written with, or lacks one of the model's tensors.
    """
    tensors, meta = load_tensors_verified(path)
    missing = [n for n in layout.names if n not in tensors]
    if missing:
        raise CheckpointError(f"{path} lacks the model's tensors {missing}")
    try:
        weights = layout.flatten({n: tensors[n] for n in layout.names})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{path} does not hold this model: {exc}") from None
    if _STATE not in meta:
        return weights, None

    def tensor(name: str) -> Array:
        if not name.startswith(STATE_PREFIX) or name not in tensors:
            raise CheckpointError(f"{path}: strategy state names a missing tensor {name!r}")
        return tensors[name]

    state = decode_state(meta[_STATE], tensor)
    return weights, SavedState(meta.get(_STRATEGY, "?"), state)


def weights_sha256(weights: Vector) -> str:
    """SHA-256 of the weights as little-endian float32: ``rounds.model_sha256`` in the state."""
    return hashlib.sha256(np.ascontiguousarray(weights, dtype="<f4").tobytes()).hexdigest()


def load_checkpoint(path: Path | str, layout: Layout) -> Vector:
    """The model of a checkpoint written by ``write_checkpoint``, as a flat vector."""
    return read_checkpoint(path, layout)[0]


def strategy_state(strategy: object) -> SavedState | None:
    """What to checkpoint of ``strategy``: its state if it keeps one, else nothing."""
    state = strategy.state_dict() if isinstance(strategy, Stateful) else None
    return None if state is None else SavedState(type(strategy).__name__, dict(state))


def restore_strategy_state(strategy: object, saved: SavedState | None, where: str) -> None:
    """Load a checkpointed state into ``strategy``; refuse a state that does not belong to it.

    A stateful strategy without a saved state is refused too: resuming would silently reset
    its accountant (epsilon) or its moments.
    """
    name = type(strategy).__name__
    if not isinstance(strategy, Stateful) or strategy.state_dict() is None:
        if saved is not None:
            raise CheckpointError(
                f"{where} holds the state of strategy {saved.strategy}, but this run's {name} "
                f"keeps none: resume the run with the config it began with"
            )
        return
    if saved is None or saved.strategy != name:
        found = "no strategy state" if saved is None else f"the state of {saved.strategy}"
        raise CheckpointError(
            f"{where} holds {found}, but {name} keeps one (privacy accountant, optimiser "
            f"moments): resume the run with the config it began with, or start a new run"
        )
    try:
        strategy.load_state_dict(saved.state)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{where}: the strategy state does not fit {name}: {exc}") from exc


def encode_state(state: Mapping[str, object]) -> tuple[str, dict[str, Array]]:
    """A state as JSON text, its numpy arrays as named tensors referenced from the JSON."""
    tensors: dict[str, Array] = {}
    tree = _encode(state, "state", tensors)
    return json.dumps(tree, allow_nan=False, sort_keys=True), tensors


def _encode(value: object, where: str, tensors: dict[str, Array]) -> object:
    if isinstance(value, np.ndarray):
        name = f"{STATE_PREFIX}{len(tensors)}"
        tensors[name] = np.ascontiguousarray(value)
        return {_TENSOR: name}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT: str(value)}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for k, v in value.items():
            if not isinstance(k, str) or k in (_TENSOR, _FLOAT):
                raise CheckpointError(f"strategy state at {where}: key {k!r} cannot be stored")
            out[k] = _encode(v, f"{where}.{k}", tensors)
        return out
    if isinstance(value, list | tuple):
        return [_encode(v, f"{where}[{i}]", tensors) for i, v in enumerate(value)]
    raise CheckpointError(f"strategy state at {where}: cannot store a {type(value).__name__}")


def decode_state(text: str, tensor: Callable[[str], Array]) -> dict[str, Any]:
    """The state that ``encode_state`` wrote; ``tensor(name)`` reads a referenced array."""

    def refuse(constant: str) -> None:
        raise CheckpointError(f"strategy state: {constant} is not JSON")

    try:
        tree = json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"strategy state is not valid JSON: {exc}") from None
    if not isinstance(tree, dict):
        raise CheckpointError(f"strategy state is a {type(tree).__name__}, not an object")
    out = _decode(tree, tensor)
    assert isinstance(out, dict)
    return out


def _decode(value: object, tensor: Callable[[str], Array]) -> object:
    if isinstance(value, list):
        return [_decode(v, tensor) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {_TENSOR} and isinstance(value[_TENSOR], str):
        return tensor(value[_TENSOR])
    if set(value) == {_FLOAT}:
        if value[_FLOAT] not in _NON_FINITE:
            raise CheckpointError(f"strategy state: {value[_FLOAT]!r} is not a float")
        return float(value[_FLOAT])
    return {k: _decode(v, tensor) for k, v in value.items()}
