"""What every role builds first: the task, the clients' data and the initial model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from murmura.client import FlatModel
from murmura.config import Config
from murmura.data.federated import Batch, FederatedDataset
from murmura.data.holdout import hold_out
from murmura.tasks import Task, evaluate_classifier, load_task
from murmura.types import EvaluateRes, Vector

EvaluateFn = Callable[[Vector], EvaluateRes]


@dataclass(frozen=True, slots=True)
class Workload:
    """The task of ``[task]``, its clients' data as ``[partition]`` splits it, the model."""

    task: Task
    data: FederatedDataset
    model: FlatModel
    partitioner: str


def federate(cfg: Config, task: Task, *, held_out: bool = True) -> tuple[str, FederatedDataset]:
    """The partitioner's name and the clients' data, with ``[evaluation]``'s local hold-out.

    ``held_out=False``: all of each client's data trains (a tree's leaves and peers).
    """
    kind = str(cfg.partition.kind or getattr(task, "default_partitioner", "iid"))
    data = task.federate(
        cfg.partition.num_clients, kind, cfg.partition.args(kind), seed=cfg.run.seed
    )
    return kind, hold_out(data, cfg.evaluation.held_out() if held_out else None, cfg.run.seed)


def workload(cfg: Config, *, held_out: bool = True, threads: int = 0) -> Workload:
    """Load the task, split its data (``federate``), then seed torch and build the model.

    Every role builds the model the same way (``torch.manual_seed(run.seed)``, then
    ``build_model``), so a simulated run and its deployed nodes start from the same weights.
    ``threads`` (0: torch's default) caps torch's intra-op threads before the model is built.
    """
    task = load_task(cfg.task.name, **cfg.task.args)
    kind, data = federate(cfg, task, held_out=held_out)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.run.seed)
    return Workload(task, data, FlatModel(task.build_model()), kind)


def central_test(w: Workload, test: Batch | None = None) -> EvaluateFn:
    """Loss and accuracy of a model on the task's central test set (``test``: as read)."""
    test_x, test_y = w.data.test() if test is None else test

    def evaluate(weights: Vector) -> EvaluateRes:
        w.model.set(weights)
        return evaluate_classifier(w.model.module, w.task, test_x, test_y)

    return evaluate


def largest_client(cfg: Config, data: FederatedDataset) -> int:
    """SecAgg+'s default ``max_weight``: the run's largest client (0 when it is not needed).

    Computed only when needed: ``client_size`` generates a lazy task's client (100,000 of
    them in W4).
    """
    if not cfg.secagg.enabled or cfg.secagg.max_weight is not None:
        return 0
    return int(max(data.client_size(c) for c in range(data.num_clients)))
