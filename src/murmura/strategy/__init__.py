"""Strategies: round configuration and the server's update rule."""

from collections.abc import Callable

from murmura.registry import Registry
from murmura.strategy.base import Strategy
from murmura.strategy.fedavg import FedAvg

STRATEGIES: Registry[Callable[..., Strategy]] = Registry("strategy")
STRATEGIES.register("fedavg")(FedAvg)
# FedProx is FedAvg on the server; its proximal term lives in the client ([client] proximal_mu).
STRATEGIES.register("fedprox")(FedAvg)

__all__ = ["STRATEGIES", "FedAvg", "Strategy"]
