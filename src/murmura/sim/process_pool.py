"""A process-pool executor: each cohort's plain clients are split over local worker processes.

Every worker rebuilds the task, its federated data and a scratch model from the run's
config once, when it starts (tasks and partitions are deterministic), so a round sends a
worker only the global weights and the ids of the clients it trains; no dataset travels.
Client ``cid`` always goes to worker ``cid % workers``, which keeps lazily generated client
data cached where it is used. A worker trains its share vectorised or one client after
another. Cohort members that are not plain ``TorchClient``s (attack or fault wrappers) run
their own ``fit`` here, in the coordinating process, while the workers train.

Messages between these processes are multiprocessing's own (pickled over a pipe between our
own processes); nothing that crosses a network is ever unpickled.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import torch

from murmura.client import Client, FlatModel, LocalSGD, TorchClient
from murmura.compose.workload import federate
from murmura.config import Config, config_from_dict
from murmura.data.federated import FederatedDataset
from murmura.errors import MurmuraError
from murmura.sim.executor import Executor, Outcome, SequentialExecutor
from murmura.sim.vectorized import VectorizedExecutor, is_plain
from murmura.tasks import Task, load_task
from murmura.types import FitIns, FitRes, Scalar, Vector

log = logging.getLogger(__name__)
MAX_RESTARTS = 3


class WorkerError(MurmuraError):
    """A worker process or actor died or answered nonsense; its clients fail this round."""


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """What a worker needs to rebuild one plain client: its id, hyper-parameters and seed."""

    cid: int
    hp: LocalSGD
    seed: int


@dataclass(frozen=True, slots=True)
class ShareRequest:
    """One round's work for one worker: the global model and the clients to train."""

    round: int
    weights: Vector
    config: dict[str, Scalar]
    clients: list[ClientSpec]


class ShareTrainer:
    """The clients of a run rebuilt from its config, inside a worker process or Ray actor."""

    def __init__(self, config: dict[str, Any], inner: str) -> None:
        cfg = config_from_dict(config, "<worker config>")
        self.task: Task = load_task(cfg.task.name, **cfg.task.args)
        self.data: FederatedDataset = federate(cfg, self.task)[1]  # as the builder splits it
        self.model = FlatModel(self.task.build_model())
        self.executor: Executor = (
            VectorizedExecutor() if inner == "vectorized" else SequentialExecutor()
        )

    def train(self, req: ShareRequest) -> list[Outcome]:
        """Train the requested clients from ``req.weights``; each outcome in request order."""
        if len(req.weights) != self.model.layout.size:
            err = WorkerError(
                f"worker model has {self.model.layout.size} parameters, "
                f"the global model {len(req.weights)}: configs differ"
            )
            return [(f"client-{s.cid}", err) for s in req.clients]
        clients = [
            TorchClient(s.cid, self.data, self.task, self.model, s.hp, s.seed) for s in req.clients
        ]
        ins = FitIns(req.round, req.weights, req.config)
        return [(node, portable(out)) for node, out in self.executor.fit(clients, ins)]


def portable(outcome: FitRes | BaseException) -> FitRes | BaseException:
    """An outcome that survives the trip back: exceptions become ``WorkerError`` with the text."""
    if isinstance(outcome, BaseException):
        return WorkerError(f"{type(outcome).__name__}: {outcome}")
    return outcome


def split_cohort(
    cohort: Sequence[Client], workers: int
) -> tuple[list[list[TorchClient]], list[Client]]:
    """Plain clients by worker (``cid % workers``), and the rest (run in this process)."""
    shares: list[list[TorchClient]] = [[] for _ in range(workers)]
    others: list[Client] = []
    for c in cohort:
        if isinstance(c, TorchClient) and is_plain(c):
            shares[c.cid % workers].append(c)
        else:
            others.append(c)
    return shares, others


def make_request(share: Sequence[TorchClient], ins: FitIns) -> ShareRequest:
    """The request that trains ``share`` in a worker."""
    specs = [ClientSpec(c.cid, c.hp, c.seed) for c in share]
    return ShareRequest(ins.round, ins.weights, dict(ins.config), specs)


def run_others(others: Sequence[Client], ins: FitIns) -> dict[str, FitRes | BaseException]:
    """Wrapped clients' own ``fit`` in this process, exceptions returned."""
    return dict(SequentialExecutor().fit(others, ins))


def in_cohort_order(
    cohort: Sequence[Client], done: dict[str, FitRes | BaseException]
) -> Iterator[Outcome]:
    """Yield every member's outcome in cohort order; a missing one is a ``WorkerError``."""
    for c in cohort:
        yield c.node_id, done.pop(c.node_id, WorkerError(f"no result for {c.node_id}"))


def _worker_main(conn: Connection, config: dict[str, Any], inner: str) -> None:
    """A worker's loop: build once, then train each request until told to stop (None).

    Ctrl-C reaches the whole foreground process group: the worker ignores SIGINT and lets
    the coordinating process decide (``murmura run`` finishes the round, then stops).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)  # one core each; the pool is the parallelism
    trainer = ShareTrainer(config, inner)
    while True:
        req = conn.recv()
        if req is None:
            break
        conn.send(trainer.train(req))
    conn.close()


class _Worker:
    """One worker process and our end of its pipe."""

    def __init__(self, ctx: Any, config: dict[str, Any], inner: str, index: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc: BaseProcess = ctx.Process(
            target=_worker_main,
            args=(child, config, inner),
            name=f"murmura-worker-{index}",
            daemon=True,
        )
        self.proc.start()
        child.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to finish, then make sure it has."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout)
        self.conn.close()


def _stop_all(workers: list[_Worker]) -> None:
    for w in workers:
        w.stop()


class ProcessPoolExecutor:
    """Trains each cohort's plain clients in ``workers`` processes (0: one per core)."""

    def __init__(self, cfg: Config, workers: int = 0, inner: str = "vectorized") -> None:
        self.config = cfg.model_dump(mode="json")
        self.inner = inner
        self.size = workers or os.cpu_count() or 1
        self._ctx = mp.get_context("spawn")
        self._workers = [_Worker(self._ctx, self.config, inner, i) for i in range(self.size)]
        self._deaths = [0] * self.size
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)
        log.info("process pool: %d workers (%s inside each)", self.size, inner)

    def fit(self, cohort: Sequence[Client], ins: FitIns) -> Iterator[Outcome]:
        """Send each worker its share, run wrapped clients here meanwhile, yield in order."""
        shares, others = split_cohort(cohort, self.size)
        busy = [i for i, share in enumerate(shares) if share and self._send(i, shares[i], ins)]
        done = run_others(others, ins)
        for i in range(self.size):
            if i in busy:
                done.update(self._receive(i, ins.round))
            else:
                done.update({c.node_id: WorkerError(f"worker {i} unavailable") for c in shares[i]})
        yield from in_cohort_order(cohort, done)

    def _send(self, i: int, share: list[TorchClient], ins: FitIns) -> bool:
        """Send a request to worker ``i``, restarting it first if it has died (3 times at most)."""
        if not self._workers[i].proc.is_alive():
            self._deaths[i] += 1
            if self._deaths[i] > MAX_RESTARTS:
                if self._deaths[i] == MAX_RESTARTS + 1:
                    log.error(
                        "worker %d died %d times; its clients fail from now on. With the spawn "
                        "start method the main script needs `if __name__ == '__main__':`",
                        i,
                        MAX_RESTARTS + 1,
                    )
                return False
            log.warning("round %d: worker %d had died; starting a new one", ins.round, i)
            self._workers[i].stop()
            self._workers[i] = _Worker(self._ctx, self.config, self.inner, i)
        try:
            self._workers[i].conn.send(make_request(share, ins))
        except (OSError, ValueError) as exc:
            log.warning("round %d: cannot reach worker %d: %r", ins.round, i, exc)
            return False
        return True

    def _receive(self, i: int, round_: int) -> dict[str, FitRes | BaseException]:
        """Worker ``i``'s outcomes; if it died mid-round, they are ``WorkerError``s."""
        try:
            outcomes: list[Outcome] = self._workers[i].conn.recv()
        except (EOFError, OSError) as exc:
            log.warning("round %d: worker %d died: %r", round_, i, exc)
            return {}
        return dict(outcomes)

    def close(self) -> None:
        """Stop the workers (also done when the executor is garbage-collected)."""
        self._finalizer()
