"""Strategies: round configuration and the server's update rule.

The implementations are imported when first used (``STRATEGIES.get``, or a name below), so
that checking a config's ``strategy.name`` imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from murmura.lazy import lazy_exports
from murmura.registry import Registry

if TYPE_CHECKING:
    from murmura.strategy.base import Strategy
    from murmura.strategy.fedavg import FedAvg
    from murmura.strategy.fedopt import FedOpt
    from murmura.strategy.scaffold import Scaffold, ScaffoldClient

# Every factory takes the same keywords: fraction, min_clients, aggregator, server_lr (None:
# the algorithm's default), seed, evaluate_fn, fraction_evaluate, min_evaluate_clients,
# server_momentum, beta1, beta2, tau; each uses the ones its algorithm has (see
# murmura.strategy.fedopt).
STRATEGIES: Registry[Callable[..., Strategy]] = Registry("strategy")
STRATEGIES.register_lazy("fedavg", "murmura.strategy.fedavg:fedavg")
# FedProx is FedAvg on the server; its proximal term lives in the client ([client] proximal_mu).
STRATEGIES.register_lazy("fedprox", "murmura.strategy.fedavg:fedavg")
STRATEGIES.register_lazy("fedavgm", "murmura.strategy.fedopt:fedavgm")
STRATEGIES.register_lazy("fedadagrad", "murmura.strategy.fedopt:fedadagrad")
STRATEGIES.register_lazy("fedadam", "murmura.strategy.fedopt:fedadam")
STRATEGIES.register_lazy("fedyogi", "murmura.strategy.fedopt:fedyogi")
STRATEGIES.register_lazy("scaffold", "murmura.strategy.scaffold:scaffold")

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "FedAvg": "murmura.strategy.fedavg",
        "FedOpt": "murmura.strategy.fedopt",
        "Scaffold": "murmura.strategy.scaffold",
        "ScaffoldClient": "murmura.strategy.scaffold",
        "Strategy": "murmura.strategy.base",
    },
)

__all__ = ["STRATEGIES", "FedAvg", "FedOpt", "Scaffold", "ScaffoldClient", "Strategy"]
