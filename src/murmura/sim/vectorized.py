"""Vectorised cohort training: many ``TorchClient``s of one architecture in one SGD loop.

The clients' parameters are stacked along a leading client axis and every step runs forward
and backward for all of them at once (``torch.func.functional_call`` under ``vmap``), each
client on its own batch. Clients are sorted by their number of steps, so the clients still
training at step ``t`` are a prefix of the stack and finished ones cost nothing; a smaller
last batch is padded and masked per sample, so each client's loss is its own batch mean. The
batches, their order and the SGD arithmetic are those of ``train_local_sgd``: the result
equals sequential training to float32 tolerance.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, vmap
from torch.nn import functional

from murmura.aggregate.steps import LOCAL_STEPS
from murmura.client import Client, FlatModel, LocalSGD, TorchClient, sgd_step, with_overrides
from murmura.seeding import client_generator
from murmura.sim.executor import Outcome
from murmura.sim.step_plan import StepPlan, batch_schedule, plan_steps
from murmura.tasks.base import Task
from murmura.types import FitIns, FitRes

log = logging.getLogger(__name__)

# One vectorised pass (stacked parameters, gradients, optimiser state and a step's
# activations) stays under this many bytes; larger cohorts are trained in several passes.
DEFAULT_MEMORY_BUDGET = 512 * 2**20


@dataclass(frozen=True, slots=True)
class CohortResult:
    """Final flat weights ``(k, d)`` and mean batch loss ``(k,)`` of each trained client."""

    weights: torch.Tensor
    loss: torch.Tensor


class VectorizedTrainer:
    """Trains stacked copies of one model with local SGD, one client per stack row.

    When only a few clients are left (as with a heavy-tailed client size), a vmapped step
    can cost more than their plain steps one after another; counting one vmapped step of a
    few clients as ``vmap_cost`` plain steps, the cheaper way finishes them, the plain way
    one by one on ``model`` itself.
    """

    def __init__(self, model: FlatModel, task: Task, vmap_cost: float = 3.0) -> None:
        self.model, self.module, self.task = model, model.module, task
        self.vmap_cost = vmap_cost
        self.names = [n for n, _ in self.module.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in self.module.named_parameters()]
        self._forward = vmap(self._forward_one)
        self._sample_loss = vmap(self._loss_one)
        self._cross_entropy: bool | None = None  # decided on the first batch

    def _forward_one(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = functional_call(self.module, params, (x,))
        return out

    def _loss_one(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.task.loss(out.unsqueeze(0), y.unsqueeze(0))

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """``(k, d)`` flat weights -> one contiguous ``(k, *shape)`` tensor per parameter."""
        out, off = [], 0
        for shape in self.shapes:
            n = int(np.prod(shape, dtype=np.int64))
            # always a copy: ``flat`` may be a view of the caller's global weights
            piece = flat[:, off : off + n].reshape(flat.shape[0], *shape)
            out.append(piece.clone(memory_format=torch.contiguous_format))
            off += n
        return out

    def step_losses(
        self, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """Each client's own batch-mean loss ``(k,)``; ``x`` is ``(k, batch, ...)``."""
        k, b = weight.shape
        out = self._forward(dict(zip(self.names, params, strict=True)), x)
        per_sample = self.sample_losses(out.flatten(0, 1), y.flatten(0, 1)).view(k, b)
        return (per_sample * weight).sum(dim=1)

    def sample_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample losses ``(n,)``: ``task.loss`` vmapped over samples, or its fused form.

        A task whose loss is batch-mean cross-entropy (checked once, on a real and a random
        batch) gets ``cross_entropy(reduction="none")``: one kernel instead of a vmap.
        """
        if self._cross_entropy is None:
            self._cross_entropy = acts_as_cross_entropy(self.task, out.detach(), y)
            log.debug("task %s: fused cross-entropy %s", self.task.name, self._cross_entropy)
        if self._cross_entropy:
            return functional.cross_entropy(out, y, reduction="none")
        per_sample: torch.Tensor = self._sample_loss(out, y)
        return per_sample

    def train(
        self, start: torch.Tensor, x: torch.Tensor, y: torch.Tensor, plan: StepPlan, hp: LocalSGD
    ) -> CohortResult:
        """Run ``plan`` from flat weights ``start`` ``(d,)``; ``x, y`` hold every client's data."""
        k_all = plan.active[0] if plan.active else 0
        params = self.split(start.expand(k_all, -1))
        origin = self.split(start.unsqueeze(0)) if hp.proximal_mu > 0 else None
        bufs = [torch.zeros_like(p) for p in params] if hp.momentum > 0 else None
        loss_sum = torch.zeros(k_all, dtype=torch.float64)
        for t, (k, s) in enumerate(zip(plan.active, plan.starts, strict=True)):
            if self._plain_is_cheaper(plan.steps, t, k):
                for i in range(k):
                    loss_sum[i] += self._finish_alone(i, t, plan, x, y, params, bufs, start, hp)
                break
            rows = plan.rows[s : s + k]
            leaves = [p[:k].detach().requires_grad_(True) for p in params]
            losses = self.step_losses(leaves, x[rows], y[rows], plan.weight[s : s + k])
            grads = torch.autograd.grad(losses.sum(), leaves)
            with torch.no_grad():
                stacked_sgd_step([p[:k] for p in params], list(grads), hp, origin, bufs, k)
            loss_sum[:k] += losses.detach()
        steps = torch.tensor(plan.steps[:k_all], dtype=torch.float64)
        flat = torch.cat([p.reshape(k_all, int(np.prod(p.shape[1:]))) for p in params], dim=1)
        return CohortResult(flat, loss_sum / steps.clamp_min(1))

    def _plain_is_cheaper(self, steps: list[int], t: int, k: int) -> bool:
        """Whether the ``k`` clients left at step ``t`` finish sooner one by one."""
        if k > 2 * self.vmap_cost:
            return False
        return sum(steps[i] - t for i in range(k)) < self.vmap_cost * (steps[0] - t)

    def _finish_alone(
        self,
        i: int,
        t0: int,
        plan: StepPlan,
        x: torch.Tensor,
        y: torch.Tensor,
        params: list[torch.Tensor],
        bufs: list[torch.Tensor] | None,
        start: torch.Tensor,
        hp: LocalSGD,
    ) -> float:
        """Client ``i``'s steps from ``t0`` on, plain (``train_local_sgd``'s step); its loss sum."""
        model = self.model
        model.flat.copy_(torch.cat([p[i].reshape(-1) for p in params]))
        buf = torch.cat([b[i].reshape(-1) for b in bufs]) if bufs is not None else None
        origin = start if hp.proximal_mu > 0 else None
        loss_sum = 0.0
        for t in range(t0, plan.steps[i]):
            r = plan.starts[t] + i
            idx = plan.rows[r, : plan.sizes[r]]
            model.grad.zero_()
            loss = self.task.loss(model.module(x[idx]), y[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            with torch.no_grad():
                sgd_step(model, hp, origin, buf)
            loss_sum += loss.item()
        for p, v in zip(params, self.split(model.flat.unsqueeze(0)), strict=True):
            p[i].copy_(v[0])
        return loss_sum


def acts_as_cross_entropy(task: Task, out: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether ``task.loss(out, y)`` equals batch-mean cross-entropy on ``out`` and noise."""
    if out.dim() != 2 or y.dim() != 1 or y.dtype != torch.int64 or len(out) == 0:
        return False
    try:
        with torch.no_grad():
            return all(
                torch.allclose(task.loss(o, y), functional.cross_entropy(o, y), rtol=1e-6)
                for o in (out, torch.randn_like(out) * 4)
            )
    except Exception:  # noqa: BLE001 - any failure just means "not cross-entropy"
        return False


def stacked_sgd_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    hp: LocalSGD,
    origin: list[torch.Tensor] | None,
    bufs: list[torch.Tensor] | None,
    k: int,
) -> None:
    """``sgd_step`` of ``murmura.client`` on stacked tensors: same terms, same order."""
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if hp.weight_decay:
            g.add_(p, alpha=hp.weight_decay)
        if origin is not None:
            g.add_(p - origin[i], alpha=hp.proximal_mu)
        if bufs is not None:
            buf = bufs[i][:k]
            buf.mul_(hp.momentum).add_(g)
            g = buf
        p.add_(g, alpha=-hp.lr)


def is_plain(client: object) -> bool:
    """Whether ``client`` is a bare ``TorchClient`` (a wrapper or subclass runs its own fit)."""
    return type(client) is TorchClient


GroupKey = tuple[int, int, LocalSGD]


def group_plain(cohort: Sequence[Client], config: object) -> dict[GroupKey, list[TorchClient]]:
    """Plain clients grouped by shared model, task and effective hyper-parameters."""
    groups: dict[GroupKey, list[TorchClient]] = {}
    for c in cohort:
        if isinstance(c, TorchClient) and is_plain(c):
            key = (id(c.model), id(c.task), with_overrides(c.hp, config))
            groups.setdefault(key, []).append(c)
    return groups


class VectorizedExecutor:
    """Trains the plain ``TorchClient``s of a cohort together; any other client runs its own fit.

    Results are yielded in cohort order. Should the vectorised pass fail, its clients are
    trained one by one so each reports its own outcome.
    """

    def __init__(self, memory_budget: int = DEFAULT_MEMORY_BUDGET, vmap_cost: float = 3.0) -> None:
        self.memory_budget, self.vmap_cost = memory_budget, vmap_cost
        self._trainers: dict[tuple[int, int], VectorizedTrainer] = {}

    def fit(self, cohort: Sequence[Client], ins: FitIns) -> Iterator[Outcome]:
        """Yield ``(node id, result or exception)`` for every client, in cohort order."""
        done: dict[str, FitRes | BaseException] = {}
        for (_, _, hp), clients in group_plain(cohort, ins.config).items():
            done.update(self._fit_group(clients, ins, hp))
        for client in cohort:
            if client.node_id in done:
                yield client.node_id, done.pop(client.node_id)
            else:
                yield client.node_id, _own_fit(client, ins)

    def trainer(self, model: FlatModel, task: Task) -> VectorizedTrainer:
        """The cached trainer of one (model, task) pair."""
        key = (id(model), id(task))
        if key not in self._trainers:
            self._trainers[key] = VectorizedTrainer(model, task, self.vmap_cost)
        return self._trainers[key]

    def _fit_group(
        self, clients: list[TorchClient], ins: FitIns, hp: LocalSGD
    ) -> dict[str, FitRes | BaseException]:
        try:
            return fit_vectorized(
                self.trainer(clients[0].model, clients[0].task),
                clients,
                ins,
                hp,
                self.memory_budget,
            )
        except Exception as exc:  # noqa: BLE001 - fall back so each client reports its own outcome
            log.warning(
                "round %d: vectorised training of %d clients failed (%r); training them one by one",
                ins.round,
                len(clients),
                exc,
            )
            return {c.node_id: _own_fit(c, ins) for c in clients}


def clients_per_pass(budget: int, dim: int, batch_size: int, sample_numel: int) -> int:
    """How many clients one vectorised pass may train within ``budget`` bytes.

    Per client: parameters, gradients, momentum and their temporaries (about eight float32
    copies of the model) plus a step's activations (taken as 32 floats per input value).
    """
    per_client = 4 * (8 * dim + 32 * batch_size * sample_numel)
    return max(1, budget // max(per_client, 1))


def _own_fit(client: Client, ins: FitIns) -> FitRes | BaseException:
    """A client's own ``fit``, with its exception returned rather than raised."""
    try:
        return client.fit(ins)
    except Exception as exc:  # noqa: BLE001 - a failing client must not end the round
        return exc


def fit_vectorized(
    trainer: VectorizedTrainer,
    clients: Sequence[TorchClient],
    ins: FitIns,
    hp: LocalSGD,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> dict[str, FitRes | BaseException]:
    """Train ``clients`` (one model, task and ``hp``) from ``ins.weights``, pass by pass.

    Each pass trains as many clients as ``memory_budget`` allows (``clients_per_pass``).
    """
    start = torch.from_numpy(np.asarray(ins.weights, dtype=np.float32))
    data = [c.data.client_train(c.cid) for c in clients]
    sample = next((x[0].numel() for x, _ in data if len(x)), 1)
    chunk = clients_per_pass(memory_budget, len(start), hp.batch_size, sample)
    tables = [
        batch_schedule(len(x), hp, client_generator(c.seed, ins.round, c.cid))
        for c, (x, _) in zip(clients, data, strict=True)
    ]
    order = sorted(range(len(clients)), key=lambda i: -len(tables[i]))
    out: dict[str, FitRes | BaseException] = {}
    for lo in range(0, len(order), chunk):
        part = order[lo : lo + chunk]
        sizes = [len(data[i][0]) for i in part]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
        plan = plan_steps([tables[i] for i in part], offsets)
        x = torch.cat([data[i][0] for i in part])
        y = torch.cat([data[i][1] for i in part])
        res = _train_or_copy(trainer, start, x, y, plan, hp, len(part))
        delta = (res.weights - start).numpy()
        for row, i in enumerate(part):
            out[clients[i].node_id] = FitRes(
                update=delta[row],
                num_examples=sizes[row],
                metrics={
                    "train_loss": float(res.loss[row]),
                    LOCAL_STEPS: float(len(tables[i])),
                },
            )
    log.debug("round %d: vectorised %d clients", ins.round, len(clients))
    return out


def _train_or_copy(
    trainer: VectorizedTrainer,
    start: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    plan: StepPlan,
    hp: LocalSGD,
    k: int,
) -> CohortResult:
    """Train the chunk; clients with no data (no steps) keep the start weights and loss 0."""
    res = trainer.train(start, x, y, plan, hp)
    trained = res.weights.shape[0]
    if trained == k:
        return res
    rest = start.expand(k - trained, -1)
    return CohortResult(
        torch.cat([res.weights, rest]), torch.cat([res.loss, torch.zeros(k - trained)])
    )
