"""The step plan of a vectorised cohort: which samples every client trains on at every step.

``batch_schedule`` draws a client's batches exactly as ``train_local_sgd`` does (one
``randperm`` per epoch from the client's own generator, a smaller last batch); ``plan_steps``
lays the cohort's batches out step-major, clients sorted longest first, so the clients still
training at a step are a prefix of the stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from murmura.client import LocalSGD


def batch_schedule(n: int, hp: LocalSGD, generator: torch.Generator) -> NDArray[np.int64]:
    """The ``(steps, batch_size)`` sample indices ``train_local_sgd`` visits; -1 pads a batch.

    One ``randperm`` per epoch from ``generator``, cut into batches in order, exactly as the
    sequential loop draws them.
    """
    b = hp.batch_size
    table = np.full((hp.epochs, -(-n // b) * b), -1, dtype=np.int64)
    for e in range(hp.epochs):
        table[e, :n] = torch.randperm(n, generator=generator).numpy()
    return table.reshape(-1, b)


@dataclass(frozen=True, slots=True)
class StepPlan:
    """A cohort's batches laid out step-major: step ``t`` trains the first ``active[t]`` clients.

    ``rows[starts[t] : starts[t] + active[t]]`` are that step's ``(client, batch)`` indices into
    the concatenated cohort data, and ``weight`` the matching per-sample loss weights
    (1 / batch size for real samples, 0 for padding).
    """

    active: list[int]
    starts: list[int]
    steps: list[int]
    rows: torch.Tensor
    weight: torch.Tensor
    sizes: list[int]


def plan_steps(tables: Sequence[NDArray[np.int64]], offsets: Sequence[int]) -> StepPlan:
    """Interleave per-client batch tables (sorted by length, longest first) step by step."""
    steps = np.asarray([len(t) for t in tables], dtype=np.int64)
    if np.any(steps[1:] > steps[:-1]):
        raise ValueError("clients must be sorted by number of steps, longest first")
    s_max = int(steps[0]) if len(steps) else 0
    active = len(steps) - np.cumsum(np.bincount(steps, minlength=s_max + 1))[:s_max]
    starts = np.concatenate([[0], np.cumsum(active)[:-1]]).astype(np.int64)
    width = tables[0].shape[1] if tables else 1
    # client k's t-th batch goes to row starts[t] + k: it is the k-th of the active prefix
    dest = np.concatenate([starts[:n] + k for k, n in enumerate(steps)] or [steps])
    local = np.concatenate(tables) if tables else np.empty((0, width), dtype=np.int64)
    base = np.repeat(np.asarray(offsets, dtype=np.int64), steps)[:, None]
    rows = np.empty_like(local)
    rows[dest] = np.where(local >= 0, local + base, base)
    weight = np.zeros(local.shape, dtype=np.float32)
    weight[dest] = local >= 0
    sizes = weight.sum(axis=1, keepdims=True)
    weight /= np.maximum(sizes, 1.0)
    return StepPlan(
        active.tolist(),
        starts[: len(active)].tolist(),
        steps.tolist(),
        torch.from_numpy(rows),
        torch.from_numpy(weight),
        sizes[:, 0].astype(np.int64).tolist(),
    )
