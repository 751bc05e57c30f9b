"""FedOpt strategies (Reddi et al. 2021): FedAvg's rounds with a stateful server optimiser.

FedAvgM, FedAdagrad, FedAdam and FedYogi are one class, ``FedOpt``, with different
``ServerOptParams``; the factories below only choose the parameters. Every strategy factory
in ``STRATEGIES`` takes the same keyword arguments (``fraction``, ``min_clients``,
``aggregator``, ``server_lr``, ``seed``, ``evaluate_fn``, ``fraction_evaluate``,
``min_evaluate_clients``, ``server_momentum``, ``beta1``, ``beta2``, ``tau``); each uses the
ones its algorithm has and ignores the others, and ``server_lr=None`` means the algorithm's
default.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from murmura.aggregate.base import Aggregator
from murmura.strategy.fedavg import EvaluateFn, FedAvg
from murmura.strategy.server_opt import Kind, ServerOptimizer, ServerOptParams
from murmura.types import Vector

# Reddi et al. tune the server lr per task; these are the usual starting points
# (FedAvg/FedAvgM: 1, Hsu et al. 2019; adaptive: 10^-2 with tau = 10^-3).
DEFAULT_SERVER_LR: dict[Kind, float] = {"sgd": 1.0, "adagrad": 1e-2, "adam": 1e-2, "yogi": 1e-2}
PAPER_BETA1, PAPER_BETA2, PAPER_TAU, PAPER_MOMENTUM = 0.9, 0.99, 1e-3, 0.9


def default_server_lr(strategy: str) -> float:
    """The server learning rate a registered strategy uses when the config sets none."""
    kinds: dict[str, Kind] = {"fedadagrad": "adagrad", "fedadam": "adam", "fedyogi": "yogi"}
    return DEFAULT_SERVER_LR[kinds.get(strategy, "sgd")]


class FedOpt(FedAvg):
    """FedAvg sampling and aggregation, then one step of a server optimiser per round."""

    def __init__(
        self,
        params: ServerOptParams,
        *,
        fraction: float = 1.0,
        min_clients: int = 1,
        aggregator: Aggregator | None = None,
        seed: int = 0,
        evaluate_fn: EvaluateFn | None = None,
        fraction_evaluate: float = 0.0,
        min_evaluate_clients: int = 1,
    ) -> None:
        super().__init__(
            fraction=fraction,
            min_clients=min_clients,
            aggregator=aggregator,
            server_lr=params.lr,
            seed=seed,
            evaluate_fn=evaluate_fn,
            fraction_evaluate=fraction_evaluate,
            min_evaluate_clients=min_evaluate_clients,
        )
        self.optimizer = ServerOptimizer(params)

    @property
    def params(self) -> ServerOptParams:
        """The server optimiser's hyper-parameters."""
        return self.optimizer.params

    def server_update(self, weights: Vector, delta: Vector) -> Vector:
        """One server-optimiser step with the aggregated delta as pseudo-gradient."""
        return self.optimizer.step(weights, delta)

    def state_dict(self) -> dict[str, object]:
        """The server optimiser's state (moments and step count)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore the server optimiser's state; a state of another kind is refused."""
        self.optimizer.load_state_dict(state)


def make_fedopt(
    kind: Kind,
    *,
    fraction: float = 1.0,
    min_clients: int = 1,
    aggregator: Aggregator | None = None,
    server_lr: float | None = None,
    seed: int = 0,
    evaluate_fn: EvaluateFn | None = None,
    fraction_evaluate: float = 0.0,
    min_evaluate_clients: int = 1,
    server_momentum: float | None = None,
    beta1: float | None = None,
    beta2: float | None = None,
    tau: float | None = None,
) -> FedOpt:
    """A ``FedOpt`` of ``kind``; unset options take the paper's defaults.

    ``server_momentum`` is used by ``sgd`` (FedAvgM) only; ``beta1``, ``beta2`` and ``tau``
    by the adaptive kinds only.
    """
    momentum = 0.0
    if kind == "sgd":
        momentum = PAPER_MOMENTUM if server_momentum is None else server_momentum
    params = ServerOptParams(
        kind=kind,
        lr=DEFAULT_SERVER_LR[kind] if server_lr is None else server_lr,
        momentum=momentum,
        beta1=PAPER_BETA1 if beta1 is None else beta1,
        beta2=PAPER_BETA2 if beta2 is None else beta2,
        tau=PAPER_TAU if tau is None else tau,
    )
    return FedOpt(
        params,
        fraction=fraction,
        min_clients=min_clients,
        aggregator=aggregator,
        seed=seed,
        evaluate_fn=evaluate_fn,
        fraction_evaluate=fraction_evaluate,
        min_evaluate_clients=min_evaluate_clients,
    )


# One rule, four parameterisations (the registry names them).
fedavgm = partial(make_fedopt, "sgd")
fedadagrad = partial(make_fedopt, "adagrad")
fedadam = partial(make_fedopt, "adam")
fedyogi = partial(make_fedopt, "yogi")
