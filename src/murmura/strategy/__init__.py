"""Strategies: round configuration and the server's update rule."""

from collections.abc import Callable

from murmura.registry import Registry
from murmura.strategy.base import Strategy
from murmura.strategy.fedavg import FedAvg, fixed_lr_factory
from murmura.strategy.fedopt import FedOpt, fedadagrad, fedadam, fedavgm, fedyogi
from murmura.strategy.scaffold import Scaffold, ScaffoldClient

# Every factory takes the same keywords: fraction, min_clients, aggregator, server_lr (None:
# the algorithm's default), seed, evaluate_fn, fraction_evaluate, min_evaluate_clients,
# server_momentum, beta1, beta2, tau; each uses the ones its algorithm has (see
# murmura.strategy.fedopt).
STRATEGIES: Registry[Callable[..., Strategy]] = Registry("strategy")
STRATEGIES.register("fedavg")(fixed_lr_factory(FedAvg))
# FedProx is FedAvg on the server; its proximal term lives in the client ([client] proximal_mu).
STRATEGIES.register("fedprox")(fixed_lr_factory(FedAvg))
STRATEGIES.register("fedavgm")(fedavgm)
STRATEGIES.register("fedadagrad")(fedadagrad)
STRATEGIES.register("fedadam")(fedadam)
STRATEGIES.register("fedyogi")(fedyogi)
STRATEGIES.register("scaffold")(fixed_lr_factory(Scaffold))

__all__ = ["STRATEGIES", "FedAvg", "FedOpt", "Scaffold", "ScaffoldClient", "Strategy"]
