"""What a node checks in an instruction from its parent before it acts on it.

A coordinator (or an edge) is trusted to run the protocol, not to send sane numbers: a model
of the wrong layout is broadcast into every parameter by numpy, a NaN model or ``lr = NaN``
trains and sends NaN, and ``epochs = 10**9`` keeps a worker busy for ever. ``check_instruction``
refuses all of these with ``InstructionRejected``, which names the field, the value and the
limit; the worker reports it as a worker error (the coordinator lists the node as failed) and
serves the next round. The limits are the worker's own (``murmura client --max-epochs ...``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from murmura.errors import ConfigError, InstructionRejected, ProtocolError
from murmura.types import Layout, Scalar, Vector

SECAGG_KEY = "secagg"
"""``murmura.transport.secagg_service.SECAGG_CONFIG_KEY``: run this round under SecAgg+."""
SCAFFOLD_KEY = "scaffold_c"
"""``murmura.strategy.scaffold.CONFIG_KEY``: SCAFFOLD's server control variate."""
CLIP_KEY = "dp_clip_norm"
"""``murmura.strategy.dp.CLIP_KEY``: the clip norm a root sends its edges under central DP."""
STANDARDISE_KEY = "standardise"
"""``murmura.analytics.standardise.STANDARDISE_KEY``: the federation's feature scaling."""


@dataclass(frozen=True, slots=True)
class InstructionLimits:
    """The largest hyper-parameters a worker accepts from its parent."""

    max_epochs: int = 1000
    max_batch_size: int = 1_000_000
    max_lr: float = 10.0
    max_weight_decay: float = 1000.0
    max_proximal_mu: float = 1e4

    def __post_init__(self) -> None:
        if self.max_epochs < 1 or self.max_batch_size < 1:
            raise ConfigError("max_epochs and max_batch_size must be at least 1")
        for name in ("max_lr", "max_weight_decay", "max_proximal_mu"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be finite and > 0, got {value}")


def check_model(weights: Vector | None, layout: Layout | None, expected: Layout | None) -> Vector:
    """``weights`` if they have the task's layout and are all finite; else ``InstructionRejected``.

    ``expected`` None (a node that does not know its model) checks only finiteness and that the
    vector fills the layout it came with.
    """
    if weights is None:
        raise InstructionRejected("the instruction carries no model")
    if weights.dtype != np.float32 or weights.ndim != 1:
        raise InstructionRejected(
            f"model is {weights.dtype} of shape {weights.shape}, not flat f32"
        )
    if layout is not None and weights.size != layout.size:
        raise InstructionRejected(f"model has {weights.size} values, its layout {layout.size}")
    if expected is not None:
        if weights.size != expected.size:
            raise InstructionRejected(
                f"model has {weights.size} values, the task's model has {expected.size}"
            )
        if layout is not None and layout != expected:
            raise InstructionRejected(f"model layout differs: {_layout_diff(layout, expected)}")
    bad = int(np.count_nonzero(~np.isfinite(weights)))
    if bad:
        raise InstructionRejected(f"model has {bad} non-finite values of {weights.size}")
    return weights


def _layout_diff(got: Layout, want: Layout) -> str:
    if got.names != want.names:
        return f"tensors {list(got.names)[:8]}, the task's model has {list(want.names)[:8]}"
    for name, g, w in zip(got.names, got.shapes, want.shapes, strict=True):
        if g != w:
            return f"tensor {name!r} has shape {g}, the task's model {w}"
    return "unknown difference"  # pragma: no cover - Layouts are equal on names and shapes


def _number(key: str, value: Scalar) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InstructionRejected(f"{key} = {value!r} is not a number")
    if not math.isfinite(value):
        raise InstructionRejected(f"{key} = {value!r} is not finite")
    return float(value)


def _integer(key: str, value: Scalar, limit: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InstructionRejected(f"{key} = {value!r} is not an integer")
    if not 1 <= value <= limit:
        raise InstructionRejected(f"{key} = {value} is outside [1, {limit}]")


def _within(
    key: str,
    value: Scalar,
    low: float,
    high: float,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    x = _number(key, value)
    if x < low or x > high or (low_open and x == low) or (high_open and x == high):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise InstructionRejected(f"{key} = {x} is outside {interval}")


def check_config(
    config: Mapping[str, Scalar], limits: InstructionLimits, dim: int | None = None
) -> None:
    """Refuse unknown keys and hyper-parameters of the wrong type, non-finite or out of range.

    The keys are ``murmura.client.LocalSGD``'s fields (the ``[client]`` section), and what
    strategies add: ``secagg``, SCAFFOLD's ``scaffold_c`` (checked against ``dim`` when known),
    central DP's ``dp_clip_norm`` and ``[stats] standardise``'s ``standardise``.
    """
    for key, value in config.items():
        check = _CHECKS.get(key)
        if check is None:
            raise InstructionRejected(f"unknown instruction key {key!r}")
        check(key, value, limits, dim)


def _scaffold(key: str, value: Scalar, limits: InstructionLimits, dim: int | None) -> None:
    if not isinstance(value, str):
        raise InstructionRejected(f"{key} is {type(value).__name__}, not base64 text")
    if dim is None:
        return
    from murmura.strategy.scaffold import decode_vector  # torch: only when SCAFFOLD runs

    try:
        decode_vector(value, dim)
    except ProtocolError as exc:
        raise InstructionRejected(str(exc)) from None


def _flag(key: str, value: Scalar, limits: InstructionLimits, dim: int | None) -> None:
    if not isinstance(value, bool):
        raise InstructionRejected(f"{key} = {value!r} is not a boolean")


def _scaling(key: str, value: Scalar, limits: InstructionLimits, dim: int | None) -> None:
    from murmura.analytics.standardise import scaling_from_json

    scaling_from_json(value)


_CHECKS = {
    "epochs": lambda k, v, lim, d: _integer(k, v, lim.max_epochs),
    "batch_size": lambda k, v, lim, d: _integer(k, v, lim.max_batch_size),
    "lr": lambda k, v, lim, d: _within(k, v, 0.0, lim.max_lr, low_open=True),
    "momentum": lambda k, v, lim, d: _within(k, v, 0.0, 1.0, high_open=True),
    "weight_decay": lambda k, v, lim, d: _within(k, v, 0.0, lim.max_weight_decay),
    "proximal_mu": lambda k, v, lim, d: _within(k, v, 0.0, lim.max_proximal_mu),
    CLIP_KEY: lambda k, v, lim, d: _within(k, v, 0.0, math.inf, low_open=True, high_open=True),
    SCAFFOLD_KEY: _scaffold,
    SECAGG_KEY: _flag,
    STANDARDISE_KEY: _scaling,
}


def check_instruction(
    weights: Vector | None,
    layout: Layout | None,
    config: Mapping[str, Scalar],
    expected: Layout | None,
    limits: InstructionLimits,
) -> Vector:
    """Check a FIT or EVALUATE instruction (model, then config); return the model."""
    checked = check_model(weights, layout, expected)
    check_config(config, limits, checked.size)
    return checked


def client_layout(client: object) -> Layout | None:
    """The layout of a client's model (``TorchClient.model.layout``), if it exposes one."""
    layout = getattr(getattr(client, "model", None), "layout", None)
    return layout if isinstance(layout, Layout) else None


def check_secagg_setup(
    num_clients: int, dim: int, index: int, dp_clip_norm: float, dp_weight_cap: float, size: int
) -> None:
    """Refuse a SecAgg+ setup that does not fit this node's update of ``size`` values.

    The rest of the round's parameters are checked by ``SecAggConfig`` itself.
    """
    if dim != size:
        raise InstructionRejected(f"secure round of dim {dim}, the update has {size} values")
    if index >= num_clients:
        raise InstructionRejected(f"secagg index {index} outside a cohort of {num_clients}")
    for key, value in (("dp_clip_norm", dp_clip_norm), ("dp_weight_cap", dp_weight_cap)):
        _within(key, value, 0.0, math.inf, high_open=True)
