"""One server-optimiser rule: FedAvg, FedAvgM, FedAdagrad, FedAdam and FedYogi as parameters.

Reddi et al. 2021, "Adaptive Federated Optimization" (Algorithm 2); server momentum from
Hsu et al. 2019, "Measuring the Effects of Non-Identical Data Distribution".

The aggregated client delta ``delta`` is the pseudo-gradient (it already points downhill).
With ``m_{-1} = 0`` and ``v_{-1} = tau^2``::

    sgd:      m_t = mu * m_{t-1} + delta                      x += lr * m_t
    adaptive: m_t = beta1 * m_{t-1} + (1 - beta1) * delta
              adagrad: v_t = v_{t-1} + delta^2
              adam:    v_t = beta2 * v_{t-1} + (1 - beta2) * delta^2
              yogi:    v_t = v_{t-1} - (1 - beta2) * delta^2 * sign(v_{t-1} - delta^2)
              x += lr * m_t / (sqrt(v_t) + tau)

FedAvg is ``sgd`` with ``mu = 0``; FedAvgM is ``sgd`` with ``mu > 0``. No bias correction,
as in the paper. The math works in float64 and the state is kept in float64.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from murmura.errors import ConfigError
from murmura.types import Vector

Kind = Literal["sgd", "adagrad", "adam", "yogi"]
KINDS: tuple[Kind, ...] = ("sgd", "adagrad", "adam", "yogi")
F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ServerOptParams:
    """Hyper-parameters of the server rule; ``momentum`` is used by ``sgd`` only."""

    kind: Kind = "sgd"
    lr: float = 1.0
    momentum: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"server optimiser kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if not self.lr > 0:
            raise ConfigError(f"server optimiser: lr = {self.lr} must be > 0")
        for name in ("momentum", "beta1", "beta2"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(f"server optimiser: {name} = {value} must be in [0, 1)")
        if not self.tau > 0:
            raise ConfigError(f"server optimiser: tau = {self.tau} must be > 0")


@dataclass(slots=True)
class ServerOptState:
    """First moment ``m``, second moment ``v`` (adaptive kinds) and the number of steps."""

    m: F64
    v: F64 | None
    steps: int = 0


def init_state(params: ServerOptParams, dim: int) -> ServerOptState:
    """State before the first step: ``m = 0``, ``v = tau^2`` for the adaptive kinds."""
    v = None if params.kind == "sgd" else np.full(dim, params.tau**2, dtype=np.float64)
    return ServerOptState(np.zeros(dim, dtype=np.float64), v)


def second_moment(kind: Kind, v: F64, delta: F64, beta2: float) -> F64:
    """The next second-moment estimate of the adaptive rule ``kind``."""
    sq = delta * delta
    if kind == "adagrad":
        return v + sq
    if kind == "adam":
        return beta2 * v + (1 - beta2) * sq
    if kind == "yogi":
        return v - (1 - beta2) * sq * np.sign(v - sq)
    raise ValueError(f"{kind!r} has no second moment")


def server_step(
    params: ServerOptParams, state: ServerOptState, weights: Vector, delta: Vector
) -> tuple[Vector, ServerOptState]:
    """One server step: the next weights and the next state (``state`` is not modified)."""
    d = np.asarray(delta, dtype=np.float64)
    if params.kind == "sgd":
        m = params.momentum * state.m + d
        step = m
        v = None
    else:
        assert state.v is not None
        m = params.beta1 * state.m + (1 - params.beta1) * d
        v = second_moment(params.kind, state.v, d, params.beta2)
        step = m / (np.sqrt(v) + params.tau)
    new = (np.asarray(weights, dtype=np.float64) + params.lr * step).astype(np.float32)
    return new, ServerOptState(m, v, state.steps + 1)


@dataclass(slots=True)
class ServerOptimizer:
    """The server rule with its state; the state is created on the first step."""

    params: ServerOptParams
    state: ServerOptState | None = field(default=None)

    def step(self, weights: Vector, delta: Vector) -> Vector:
        """Apply one aggregated delta to ``weights``."""
        if self.state is None or self.state.m.shape != (weights.size,):
            self.state = init_state(self.params, weights.size)
        new, self.state = server_step(self.params, self.state, weights, delta)
        return new

    def state_dict(self) -> dict[str, object]:
        """The optimiser's state, tagged with its kind (arrays are copies)."""
        s = self.state
        return {
            "kind": self.params.kind,
            "steps": 0 if s is None else s.steps,
            "m": None if s is None else s.m.copy(),
            "v": None if s is None or s.v is None else s.v.copy(),
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore a state saved by ``state_dict``; a state of another kind is refused."""
        kind = state.get("kind")
        if kind != self.params.kind:
            raise ConfigError(
                f"server optimiser state is of kind {kind!r}, this optimiser is "
                f"{self.params.kind!r}"
            )
        m, v = state.get("m"), state.get("v")
        if m is None:
            self.state = None
            return
        m_arr = np.array(m, dtype=np.float64)
        v_arr = None if v is None else np.array(v, dtype=np.float64)
        if (v_arr is None) != (self.params.kind == "sgd") or (
            v_arr is not None and v_arr.shape != m_arr.shape
        ):
            raise ConfigError("server optimiser state: moments do not match the kind or shape")
        steps = state.get("steps", 0)
        self.state = ServerOptState(m_arr, v_arr, int(steps) if isinstance(steps, int) else 0)
