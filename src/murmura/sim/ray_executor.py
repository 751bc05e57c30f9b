"""A Ray executor: each cohort's plain clients are split over Ray actors, on one machine or many.

The same split as ``process_pool``: every actor rebuilds the run's task and data from the
config when it starts and keeps them, so a round ships only the global weights (put in Ray's
object store once per round) and client ids. Each actor reserves ``num_cpus_per_client``
CPUs (and ``num_gpus_per_client`` GPUs) for the client, or vectorised share, it is training,
so the cluster's resources bound how many train at once. Wrapped clients run their own
``fit`` in the driver. Ray is the optional extra ``murmura[ray]``; it is imported only here.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from murmura.client import Client
from murmura.config import Config
from murmura.errors import ConfigError
from murmura.sim.executor import Outcome
from murmura.sim.process_pool import (
    ShareRequest,
    ShareTrainer,
    WorkerError,
    in_cohort_order,
    make_request,
    run_others,
    split_cohort,
)
from murmura.types import FitIns, FitRes, Vector

log = logging.getLogger(__name__)
_NO_WEIGHTS: Vector = np.zeros(0, dtype=np.float32)  # sent apart, as an object reference


def import_ray() -> Any:
    """The ``ray`` module, or a ``ConfigError`` saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ConfigError(
            "simulation.executor = 'ray' needs Ray: pip install 'murmura[ray]'"
        ) from None


class RayShare:
    """The actor: a ``ShareTrainer`` living in a Ray worker process."""

    def __init__(self, config: dict[str, Any], inner: str, threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        self.trainer = ShareTrainer(config, inner)

    def train(self, req: ShareRequest, weights: Vector) -> list[Outcome]:
        """Train one round's share; ``weights`` arrives resolved from the object store."""
        return self.trainer.train(replace(req, weights=weights))


class RayExecutor:
    """Trains each cohort's plain clients on Ray actors; a local Ray if ``address`` is None."""

    def __init__(
        self,
        cfg: Config,
        address: str | None = None,
        workers: int = 0,
        num_cpus_per_client: float = 1.0,
        num_gpus_per_client: float = 0.0,
        inner: str = "vectorized",
    ) -> None:
        self.ray = import_ray()
        self._owns_ray = not self.ray.is_initialized()
        if self._owns_ray:
            self.ray.init(address=address, include_dashboard=False, log_to_driver=False)
        cpus = float(self.ray.cluster_resources().get("CPU", 1.0))
        self.size = workers or max(1, int(cpus // num_cpus_per_client))
        self._actor = self.ray.remote(num_cpus=num_cpus_per_client, num_gpus=num_gpus_per_client)(
            RayShare
        )
        self._args = (cfg.model_dump(mode="json"), inner, max(1, int(num_cpus_per_client)))
        self._actors = [self._actor.remote(*self._args) for _ in range(self.size)]
        log.info(
            "ray: %d actors, %.2g CPUs each (%s inside each), cluster CPUs %.0f",
            self.size,
            num_cpus_per_client,
            inner,
            cpus,
        )

    def fit(self, cohort: Sequence[Client], ins: FitIns) -> Iterator[Outcome]:
        """Submit each actor's share, run wrapped clients here meanwhile, yield in order."""
        shares, others = split_cohort(cohort, self.size)
        weights = self.ray.put(ins.weights)
        futures = {}
        for i, share in enumerate(shares):
            if share:
                req = replace(make_request(share, ins), weights=_NO_WEIGHTS)
                futures[i] = self._actors[i].train.remote(req, weights)
        done = run_others(others, ins)
        for i, fut in futures.items():
            done.update(self._result(i, fut, ins.round))
        yield from in_cohort_order(cohort, done)

    def _result(self, i: int, fut: Any, round_: int) -> dict[str, FitRes | BaseException]:
        """Actor ``i``'s outcomes; if it died, an empty dict (its clients fail) and a new actor."""
        try:
            return dict(self.ray.get(fut))
        except Exception as exc:  # noqa: BLE001 - Ray wraps actor deaths in several types
            log.warning("round %d: ray actor %d failed: %r; replacing it", round_, i, exc)
            self._actors[i] = self._actor.remote(*self._args)
            return {}

    def close(self) -> None:
        """Stop the actors, and Ray itself if this executor started it."""
        for actor in self._actors:
            self.ray.kill(actor)
        self._actors = []
        if self._owns_ray:
            self.ray.shutdown()


__all__ = ["RayExecutor", "WorkerError", "import_ray"]
