"""Picks the executor a simulation runs on: ``[simulation] executor`` and the "auto" rule.

"auto" trains cohorts vectorised when that gives the same result as one client after
another: every client a plain ``TorchClient``, a model without buffers (batch-norm running
statistics would be shared state), and a vmap dry run of one training step that succeeds
(data-dependent control flow and random ops fail it) and agrees with the task's own loss.
Otherwise it runs sequentially. A log line says which and why. An explicit "vectorized",
"process" or "ray" also takes wrapped clients (attacks, faults): those run their own ``fit``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from murmura.client import Client, FlatModel, TorchClient
from murmura.config import Config
from murmura.errors import ConfigError
from murmura.sim.executor import Executor, SequentialExecutor
from murmura.sim.vectorized import VectorizedExecutor, VectorizedTrainer, is_plain
from murmura.tasks.base import Task

log = logging.getLogger(__name__)


def why_not_vectorized(model: FlatModel, task: Task, clients: Sequence[Client]) -> str | None:
    """The reason "auto" does not train this population vectorised, or None if it does."""
    if not clients or not all(is_plain(c) for c in clients):
        return "not every client is a plain TorchClient"
    return model_obstacle(model, task, clients)


def model_obstacle(model: FlatModel, task: Task, clients: Sequence[Client]) -> str | None:
    """Why the model or loss cannot be vmapped (buffers, dry-run failure), or None."""
    buffers = [n for n, _ in model.module.named_buffers()]
    if buffers:
        return f"the model has buffers ({', '.join(buffers[:3])}), e.g. batch-norm statistics"
    sample = _sample_batch(clients)
    if sample is None:  # nothing to vectorise; the executor's own fallback still guards
        return None
    return dry_run(model, task, *sample)


def _sample_batch(clients: Sequence[Client]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Up to four samples of the first plain client (of the first few) that has data."""
    plain = [c for c in clients[:64] if isinstance(c, TorchClient) and is_plain(c)]
    for c in plain[:8]:
        x, y = c.data.client_train(c.cid)
        if len(x):
            return x[:4], y[:4]
    return None


def dry_run(model: FlatModel, task: Task, x: torch.Tensor, y: torch.Tensor) -> str | None:
    """One vectorised step for two stacked copies; None if it runs and matches ``task.loss``."""
    trainer = VectorizedTrainer(model, task)
    flat = model.flat.detach().unsqueeze(0).expand(2, -1)
    params = [p.requires_grad_(True) for p in trainer.split(flat)]
    weight = torch.full((2, len(x)), 1.0 / len(x))
    try:
        losses = trainer.step_losses(params, torch.stack([x, x]), torch.stack([y, y]), weight)
        torch.autograd.grad(losses.sum(), params)
    except Exception as exc:  # noqa: BLE001 - any failure means "not vectorisable"
        return f"a vmap dry run failed ({type(exc).__name__}: {str(exc)[:120]})"
    with torch.no_grad():
        expected = float(task.loss(model.module(x), y))
    got = float(losses[0].detach())
    if abs(got - expected) > 1e-4 * max(1.0, abs(expected)):
        return f"the task's loss is not a mean of per-sample losses ({got} != {expected})"
    return None


def choose_executor(
    cfg: Config, model: FlatModel, task: Task, clients: Sequence[Client]
) -> Executor:
    """The executor ``cfg.simulation.executor`` names; "auto" decides as the module says."""
    kind = cfg.simulation.executor
    if kind == "sequential":
        return SequentialExecutor()
    if kind == "auto":
        reason = why_not_vectorized(model, task, clients)
        if reason is None:
            log.info("executor: vectorized (auto: plain clients, no buffers, vmap dry run ok)")
            return VectorizedExecutor()
        log.info("executor: sequential (auto: %s)", reason)
        return SequentialExecutor()
    # explicit choices: wrapped clients (attacks, faults) run their own fit on any executor
    obstacle = model_obstacle(model, task, clients)
    if kind == "vectorized":
        if obstacle is not None:
            raise ConfigError(f"simulation.executor = 'vectorized' cannot be used: {obstacle}")
        return VectorizedExecutor()
    inner = "vectorized" if obstacle is None else "sequential"
    if kind == "process":
        from murmura.sim.process_pool import ProcessPoolExecutor

        return ProcessPoolExecutor(cfg, workers=cfg.simulation.workers, inner=inner)
    from murmura.sim.ray_executor import RayExecutor

    return RayExecutor(
        cfg,
        address=cfg.simulation.ray_address,
        workers=cfg.simulation.workers,
        num_cpus_per_client=cfg.simulation.num_cpus_per_client,
        inner=inner,
    )
