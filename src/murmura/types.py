"""Core types: the flat-vector model layout and the messages of one round.

Updates are deltas (new - global) as one flat float32 vector per client; a ``Layout`` maps
that vector back to named tensors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

Vector = NDArray[np.float32]
Scalar = bool | int | float | str


@dataclass(frozen=True, slots=True)
class Layout:
    """Names and shapes of a model's tensors, in the order they sit in the flat vector."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes):
            raise ValueError("Layout needs one shape per name")
        if len(set(self.names)) != len(self.names):
            raise ValueError("Layout names must be unique")

    @classmethod
    def of(cls, tensors: Mapping[str, object]) -> Layout:
        """Layout of a name -> tensor mapping (numpy arrays or torch tensors)."""
        return cls(
            tuple(tensors),
            tuple(tuple(int(s) for s in t.shape) for t in tensors.values()),  # type: ignore[attr-defined]
        )

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of elements of each tensor."""
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start of each tensor in the flat vector."""
        return tuple(int(o) for o in np.concatenate([[0], np.cumsum(self.sizes)[:-1]]))

    @property
    def size(self) -> int:
        """Total number of parameters."""
        return int(sum(self.sizes))

    def flatten(self, tensors: Mapping[str, NDArray[np.floating]]) -> Vector:
        """Concatenate named arrays into one float32 vector, in layout order."""
        missing = set(self.names) - set(tensors)
        if missing:
            raise ValueError(f"tensors missing from layout: {sorted(missing)}")
        out = np.empty(self.size, dtype=np.float32)
        for name, shape, off, n in zip(
            self.names, self.shapes, self.offsets, self.sizes, strict=True
        ):
            arr = np.asarray(tensors[name], dtype=np.float32)
            if arr.shape != shape:
                raise ValueError(f"tensor {name!r} has shape {arr.shape}, layout says {shape}")
            out[off : off + n] = arr.reshape(-1)
        return out

    def unflatten(self, vector: Vector) -> dict[str, Vector]:
        """Split a flat vector into named arrays (views, no copy)."""
        if vector.shape != (self.size,):
            raise ValueError(f"vector has shape {vector.shape}, layout needs ({self.size},)")
        return {
            name: vector[off : off + n].reshape(shape)
            for name, shape, off, n in zip(
                self.names, self.shapes, self.offsets, self.sizes, strict=True
            )
        }

    def to_dict(self) -> dict[str, list[int]]:
        """JSON-friendly form: name -> shape."""
        return {n: list(s) for n, s in zip(self.names, self.shapes, strict=True)}


@dataclass(frozen=True, slots=True)
class FitIns:
    """What a client receives for local training: the round, global weights and config."""

    round: int
    weights: Vector
    config: Mapping[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FitRes:
    """What a client returns: its delta (new - global), example count and training metrics."""

    update: Vector
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EvaluateRes:
    """Loss and metrics of a model on some data."""

    loss: float
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Failure:
    """A node that did not contribute to a round, and why."""

    node: str
    reason: str


@dataclass(slots=True)
class RoundMetrics:
    """What happened in one round; one line of ``metrics.jsonl``."""

    round: int
    participants: int
    failures: list[Failure] = field(default_factory=list)
    train_loss: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)
    federated_loss: float | None = None
    federated_accuracy: float | None = None
    federated_clients: int | None = None
    """Clients whose evaluation held examples; None: no federated evaluation this round."""

    def to_json(self) -> dict[str, object]:
        """JSON-friendly form; the federated figures only for rounds that had them."""
        out: dict[str, object] = {
            "round": self.round,
            "participants": self.participants,
            "failures": [{"node": f.node, "reason": f.reason} for f in self.failures],
            "train_loss": self.train_loss,
            "test_loss": self.test_loss,
            "test_accuracy": self.test_accuracy,
        }
        if self.federated_clients is not None:
            out["federated_loss"] = self.federated_loss
            out["federated_accuracy"] = self.federated_accuracy
            out["federated_clients"] = self.federated_clients
        out["seconds"] = round(self.seconds, 6)
        out.update(self.extra)
        return {k: json_safe(v) for k, v in out.items()}


def json_safe(value: object) -> object:
    """``value`` with non-finite floats as the strings "inf", "-inf", "nan" (JSON has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
