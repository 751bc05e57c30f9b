"""Hierarchical aggregation: edge aggregators between the root and the clients.

An ``EdgeAggregator`` is a Learner to its parent whose ``fit`` is a server round over its own
children (``murmura.engine.server_round``, the star's) with its own ``Strategy`` (so each
edge may use its own robust rule). It reports its delta
with the total example count of the children that contributed, so the parent's weighted
mean of edge deltas equals the flat weighted mean of client deltas (hierarchical FL as in
Liu et al. 2020, "Client-Edge-Cloud Hierarchical Federated Learning"). With
``[strategy] max_weight_share`` every aggregation caps its inputs' shares: an edge its
children's (and it reports their capped total), the root its edges'. The built tree's root
runs its edges on a ``TreeExecutor``: one round trains every edge's children together, on the
executor a star run would choose (``murmura.sim.tree_executor``).

With ``[privacy]``, ``mode = "local"`` and ``dp_sgd`` wrap the clients as in the star
topology (``apply_privacy``) and the root spends the budgets (``Accounted``): an edge sees
only privatised releases and passes on their post-processing, so the star's accounting holds.
``mode = "central"`` is DP-FedAvg with trusted edges: an edge whose strategy is a
``PartialSum`` (``murmura.strategy.dp.EdgeSum``) reports its clients' clipped, weighted sum
instead of a mean, and the root (``DifferentiallyPrivate(from_edges=True)``) sums the edges'
sums and adds the noise once, as the star's server does: same sample, noise and epsilon.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from murmura.aggregate.buffer import UpdateBuffer
from murmura.client import Client
from murmura.compose.edge import edge_strategy
from murmura.compose.server import tree_root
from murmura.compose.workload import largest_client
from murmura.config import Config
from murmura.engine.edge_round import PartialSum, edge_examples, nothing_to_report
from murmura.engine.server_round import collect, plan_round
from murmura.sim.choose import choose_executor
from murmura.sim.executor import Executor, Outcome, SequentialExecutor
from murmura.sim.experiment import Experiment
from murmura.sim.runtime import RoundReporter, Simulation
from murmura.sim.tree_executor import TreeExecutor
from murmura.strategy import Strategy
from murmura.strategy.hooks import Stateful
from murmura.topology import build_topology
from murmura.types import EvaluateRes, Failure, FitIns, FitRes, RoundMetrics, Vector
from murmura.validation import Check, default_checks

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EdgeRound:
    """One edge's round in progress: its parent's and its children's instructions, its cohort."""

    ins: FitIns
    child_ins: FitIns
    cohort: list[Client]


class EdgeAggregator:
    """A worker to its parent and a coordinator to its children (clients or other edges)."""

    def __init__(
        self,
        node_id: str,
        children: Sequence[Client],
        strategy: Strategy,
        *,
        executor: Executor | None = None,
        checks: Sequence[Check] | None = None,
        max_weight_share: float | None = None,
    ) -> None:
        if not children:
            raise ValueError(f"edge {node_id!r} has no children")
        self.node_id = node_id
        self.children = {c.node_id: c for c in children}
        self.strategy = strategy
        self.executor = executor or SequentialExecutor()
        self.checks = list(checks) if checks is not None else None
        self.max_weight_share = max_weight_share
        self.last_sampled: list[str] = []
        self.last_failures: list[Failure] = []

    def fit(self, ins: FitIns) -> FitRes:
        """One round over the children; return the aggregated delta and the example total."""
        round_ = self.begin(ins)
        return self.finish(round_, self.executor.fit(round_.cohort, round_.child_ins))

    def state_dict(self) -> dict[str, object]:
        """The edge strategy's state between rounds (none for a stateless one)."""
        own = self.strategy.state_dict() if isinstance(self.strategy, Stateful) else None
        return {"kind": "edge", "strategy": None if own is None else dict(own)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the edge strategy's state; a state of another kind is refused."""
        if state.get("kind") != "edge":
            raise ValueError(f"state is of kind {state.get('kind')!r}, expected 'edge'")
        own = state.get("strategy")
        keeps = isinstance(self.strategy, Stateful) and self.strategy.state_dict() is not None
        if keeps != (own is not None):
            raise ValueError(f"edge {self.node_id!r}: the saved state is of another strategy")
        if isinstance(self.strategy, Stateful) and isinstance(own, Mapping):
            self.strategy.load_state_dict(own)

    def begin(self, ins: FitIns) -> EdgeRound:
        """The first half of ``fit``: the children this round trains and their instructions.

        ``TreeExecutor`` calls it on every edge of a round, trains all their children in
        one executor call, then hands each edge its children's outcomes (``finish``).
        """
        weights = np.asarray(ins.weights, dtype=np.float32)
        nodes = list(self.children)
        plan = plan_round(self.strategy, ins.round, self.children, nodes, weights, ins.config)
        self.last_sampled = [c.node_id for c in plan.cohort]
        return EdgeRound(ins, plan.ins, plan.cohort)

    def finish(self, round_: EdgeRound, outcomes: Iterable[Outcome]) -> FitRes:
        """The second half of ``fit``: validate the children's outcomes and aggregate them."""
        ins, weights = round_.ins, round_.child_ins.weights
        buffer = UpdateBuffer(
            len(round_.cohort), weights.size, self.strategy.keep_rows, self.max_weight_share
        )
        checks = self.checks if self.checks is not None else default_checks(weights.size)
        failures = collect(ins.round, round_.cohort, outcomes, buffer, checks, who="child")
        self.last_failures = failures
        metrics = {"clients": float(len(buffer)), "child_failures": float(len(failures))}
        if isinstance(self.strategy, PartialSum):
            # a sum of nothing is a valid part of a DP release: an empty edge reports zeros
            delta, extra = self.strategy.partial_sum(ins.round, ins.config, buffer)
            metrics.update(extra)
        else:
            delta = self._mean_delta(ins.round, weights, buffer, failures)
        loss = buffer.mean_metric("train_loss")
        if loss is not None:
            metrics["train_loss"] = loss
        return FitRes(update=delta, num_examples=edge_examples(buffer), metrics=metrics)

    def _mean_delta(
        self, round_: int, weights: Vector, buffer: UpdateBuffer, failures: Sequence[Failure]
    ) -> Vector:
        """The edge strategy's new model minus ``weights``; refuses an empty round."""
        new = self.strategy.aggregate(round_, weights, buffer, failures)
        if new is None or len(buffer) == 0:
            seen = RoundMetrics(round_, participants=len(buffer), failures=list(failures))
            if isinstance(self.strategy, RoundReporter):  # secure aggregation: its survivors
                self.strategy.report(round_, seen)
            raise nothing_to_report(self.node_id, round_, seen.participants, len(seen.failures))
        return np.asarray(new, dtype=np.float32) - weights

    def evaluate(self, weights: Vector) -> EvaluateRes:
        """Examples-weighted loss and accuracy of ``weights`` over the children that answer."""
        results = []
        for child in self.children.values():
            try:
                results.append(child.evaluate(weights))
            except Exception as exc:  # noqa: BLE001 - one failing child must not end the edge
                log.warning(
                    "edge %s: child %s evaluate raised %r", self.node_id, child.node_id, exc
                )
        total = sum(r.num_examples for r in results)
        if total == 0:
            return EvaluateRes(loss=float("nan"), num_examples=0)
        loss = sum(r.loss * r.num_examples for r in results) / total
        acc = sum(r.metrics.get("accuracy", 0.0) * r.num_examples for r in results) / total
        return EvaluateRes(loss=loss, num_examples=total, metrics={"accuracy": acc})


def split_clients(clients: Sequence[Client], edges: int) -> list[list[Client]]:
    """Clients in contiguous blocks per edge, as ``murmura.topology``'s ``tree`` places them."""
    graph = build_topology("tree", edges=edges, leaves=len(clients))
    first = edges + 1
    groups: list[list[Client]] = [[] for _ in range(edges)]
    for i, client in enumerate(clients):
        groups[int(graph.nodes[first + i]["parent"]) - 1].append(client)
    return groups


def build_edges(
    groups: Sequence[Sequence[Client]],
    make_strategy: Callable[[int, int], Strategy],
    max_weight_share: float | None = None,
) -> list[EdgeAggregator]:
    """One ``EdgeAggregator`` per group; ``make_strategy(edge, num_children)`` builds its rule."""
    return [
        EdgeAggregator(
            f"edge-{e}", group, make_strategy(e, len(group)), max_weight_share=max_weight_share
        )
        for e, group in enumerate(groups, start=1)
    ]


def build_hierarchical_experiment(cfg: Config) -> Experiment:
    """Root -> ``topology.edges`` edges -> clients; edges run ``[strategy]``, the root FedAvg.

    Each edge samples its own children with ``strategy.fraction`` and aggregates them with
    ``strategy.aggregator``; the root takes every edge and applies ``strategy.server_lr``.
    The root's and the edges' rules are the deployed roles' (``murmura.compose``).
    """
    root = tree_root(cfg)
    w, clients = root.workload, root.learners
    groups = split_clients(clients, cfg.topology.edges)
    largest = largest_client(cfg, w.data)
    population = [c.node_id for c in clients]  # central DP: the star's Poisson stream

    def rule(edge: int, size: int) -> Strategy:
        return edge_strategy(cfg, f"edge-{edge}", size, largest, population)

    # the share cap applies wherever updates are weighted: each edge over its children, the
    # root over its edges (as a deployed root, a star coordinator, applies its [strategy])
    s = cfg.strategy
    edges = build_edges(groups, rule, s.max_weight_share)
    log.info("hierarchical: %d edges over %d clients", len(edges), w.data.num_clients)
    sim = Simulation(
        root.strategy,
        edges,
        w.model.get(),
        executor=TreeExecutor(choose_executor(cfg, w.model, w.task, clients)),  # as a star would
        evaluate_every=cfg.evaluation.every,
        max_weight_share=s.max_weight_share,
    )
    return Experiment(cfg, w.task, w.data, w.model, sim, root.byzantine)
