"""Process entry points for the deployment tests: a coordinator and numpy-only workers.

Run as a script (``python tests/node/procs.py coordinator|worker ...``) so each node is a real
separate process with its own certificate. Workers import no torch, so they start fast; their
"training" is a deterministic function of (node, round, weights), and each saves its update so
the test can recompute the expected aggregate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
import zlib
from pathlib import Path

import numpy as np

from murmura.node.worker import Worker
from murmura.strategy.base import Strategy
from murmura.transport import keys
from murmura.transport.grpc_client import CoordinatorLink, LinkOptions
from murmura.types import EvaluateRes, FitIns, FitRes, Layout

LAYOUT = Layout(("a", "b"), ((50,), (10, 5)))
DP_NOISE, DP_CLIP, DP_DELTA = 1.0, 0.5, 1e-5


def initial_weights() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(LAYOUT.size).astype(np.float32)


class FakeClient:
    """Deterministic local 'training'; hangs at ``hang_round`` after saying so in a file.

    Its evaluation is a deterministic function of (node, weights), saved for the test to
    recompute the aggregate; with ``eval_nan`` the loss is NaN. With ``fail`` both fit and
    evaluate raise.
    """

    def __init__(
        self,
        name: str,
        out: Path,
        hang_round: int,
        pause_round: int = -1,
        eval_nan: bool = False,
        fail: bool = False,
    ) -> None:
        self.name, self.out, self.hang_round = name, out, hang_round
        self.pause_round, self.eval_nan, self.evaluations = pause_round, eval_nan, 0
        self.fail = fail
        self.crc = zlib.crc32(name.encode())

    def evaluate(self, weights: np.ndarray) -> EvaluateRes:
        self.evaluations += 1
        if self.fail:
            raise OSError(f"injected evaluation failure of {self.name}")
        w = np.asarray(weights, dtype=np.float32)
        total = float(w.astype(np.float64).sum())
        n = 3 + self.crc % 5
        acc = float(abs(np.tanh(total + self.crc % 10)))
        loss = float("nan") if self.eval_nan else 1.0 - acc
        record = {"n": n, "accuracy": acc, "loss": loss, "weights_sum": total}
        (self.out / f"{self.name}-e{self.evaluations}.json").write_text(json.dumps(record))
        return EvaluateRes(loss, n, {"accuracy": acc})

    def fit(self, ins: FitIns) -> FitRes:
        if self.fail:
            raise RuntimeError(f"injected failure of {self.name} in round {ins.round}")
        if ins.round == self.hang_round:
            (self.out / f"{self.name}-hang-{ins.round}").touch()
            time.sleep(3600)
        if ins.round == self.pause_round:  # once: wait until the test says go on
            self.pause_round = -1
            (self.out / f"{self.name}-paused").touch()
            while not (self.out / "release").exists():
                time.sleep(0.05)
        rng = np.random.default_rng([self.crc, ins.round])
        w = np.asarray(ins.weights, dtype=np.float32)
        update = np.float32(-0.1) * w + rng.standard_normal(w.size).astype(np.float32) * 0.01
        n = 10 + self.crc % 7
        np.save(self.out / f"{self.name}-r{ins.round}.npy", update, allow_pickle=False)
        (self.out / f"{self.name}-r{ins.round}.json").write_text(json.dumps({"n": n}))
        return FitRes(update.astype(np.float32), n, {"train_loss": float(ins.round)})


class ClaimingClient:
    """Pushes ``push`` in every coordinate and claims ``claim`` examples (an inflated count)."""

    def __init__(self, claim: int, push: float) -> None:
        self.claim, self.push = claim, push

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(np.full(LAYOUT.size, self.push, dtype=np.float32), self.claim, {})


def make_strategy(
    kind: str,
    min_clients: int,
    cohort: int = 3,
    target_epsilon: float | None = None,
    fraction_evaluate: float = 0.0,
) -> Strategy:
    """``fedavg``, ``fedadam``, or ``dp``: central DP (DP-FedAvg, q = 1) around FedAdam.

    No test set: with ``fraction_evaluate`` > 0 the workers evaluate (federated evaluation).
    """
    from murmura.privacy.accountant import create_accountant
    from murmura.privacy.budget import PrivacyBudget
    from murmura.privacy.mechanisms import CentralDP
    from murmura.strategy import FedAvg
    from murmura.strategy.dp import DifferentiallyPrivate
    from murmura.strategy.fedopt import fedadam

    if kind == "fedavg":
        return FedAvg(min_clients=min_clients, seed=0, fraction_evaluate=fraction_evaluate)
    adam = fedadam(
        min_clients=min_clients, seed=0, server_lr=0.05, fraction_evaluate=fraction_evaluate
    )
    if kind == "fedadam":
        return adam
    budget = PrivacyBudget(
        create_accountant("rdp"),
        noise_multiplier=DP_NOISE,
        sample_rate=1.0,
        delta=DP_DELTA,
        target_epsilon=target_epsilon,
    )
    mechanism = CentralDP(DP_CLIP, DP_NOISE, float(cohort))
    return DifferentiallyPrivate(adam, mechanism, budget, seed=0)


def coordinator(a: argparse.Namespace) -> None:
    from murmura.node.coordinator import Coordinator, CoordinatorSettings
    from murmura.transport.grpc_server import ServerOptions

    f = keys.node_files(a.keys, "coordinator")
    names = a.names.split(",")
    strategy = make_strategy(
        a.strategy, a.min_clients, len(names), a.target_epsilon, a.fraction_evaluate
    )
    settings = CoordinatorSettings(
        state_dir=Path(a.state),
        rounds=a.rounds,
        run_name="test",
        round_timeout_s=a.timeout,
        min_nodes=a.min_nodes,
        join_timeout_s=60,
        heartbeat_s=0.3,
        lost_after_s=a.lost_after,
        shutdown_grace_s=1.0,
        max_weight_share=a.max_weight_share,
    )
    server = ServerOptions(
        port=a.port,
        credentials=keys.Credentials.load(f.cert, f.key, f.ca),
        allowlist=frozenset(names),
    )
    asyncio.run(Coordinator(strategy, initial_weights(), LAYOUT, settings, server).run())


def worker(a: argparse.Namespace) -> None:
    f = keys.node_files(a.keys, a.name)
    opts = LinkOptions(pull_wait_s=2.0, backoff_initial_s=0.1, backoff_max_s=0.5, max_retry_s=120)
    link = CoordinatorLink(
        f"127.0.0.1:{a.port}", a.name, keys.Credentials.load(f.cert, f.key, f.ca), opts
    )
    client: FakeClient | ClaimingClient = (
        ClaimingClient(a.claim, a.push)
        if a.claim is not None
        else FakeClient(a.name, Path(a.out), a.hang_round, a.pause_round, a.eval_nan, a.fail)
    )
    Worker(link, client, rejoin_max_s=120).run()


def edge(a: argparse.Namespace) -> None:
    """An edge aggregator: a worker of the coordinator at ``--port``, FedAvg over ``--names``."""
    from murmura.node.coordinator import CoordinatorSettings
    from murmura.node.edge import Edge, EdgeSettings
    from murmura.strategy import FedAvg
    from murmura.transport.grpc_server import ServerOptions

    f = keys.node_files(a.keys, a.name)
    creds = keys.Credentials.load(f.cert, f.key, f.ca)
    settings = CoordinatorSettings(
        state_dir=Path(a.state),
        run_name=f"test-{a.name}",
        round_timeout_s=a.timeout,
        min_nodes=a.min_nodes,
        join_timeout_s=60,
        heartbeat_s=0.3,
        lost_after_s=a.lost_after,
        evaluate_every=0,
        shutdown_grace_s=1.0,
        max_weight_share=a.max_weight_share,
    )
    server = ServerOptions(
        port=a.listen_port, credentials=creds, allowlist=frozenset(a.names.split(","))
    )
    link = LinkOptions(pull_wait_s=2.0, backoff_initial_s=0.1, backoff_max_s=0.5)
    es = EdgeSettings(a.name, f"127.0.0.1:{a.port}", settings, server, creds, a.min_clients, link)
    asyncio.run(Edge(es, FedAvg(min_clients=a.min_clients, seed=0), LAYOUT).run())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["coordinator", "worker", "edge"])
    p.add_argument("--keys", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state", default="")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--min-clients", type=int, default=1)
    p.add_argument("--min-nodes", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--lost-after", type=float, default=2.0)
    p.add_argument("--names", default="")
    p.add_argument("--name", default="")
    p.add_argument("--out", default="")
    p.add_argument("--hang-round", type=int, default=-1)
    p.add_argument("--pause-round", type=int, default=-1)
    p.add_argument("--strategy", choices=["fedavg", "fedadam", "dp"], default="fedavg")
    p.add_argument("--target-epsilon", type=float, default=None)
    p.add_argument("--fraction-evaluate", type=float, default=0.0)
    p.add_argument("--eval-nan", action="store_true")
    p.add_argument("--fail", action="store_true", help="fit and evaluate raise")
    p.add_argument("--max-weight-share", type=float, default=None)
    p.add_argument("--claim", type=int, default=None, help="a ClaimingClient's example count")
    p.add_argument("--push", type=float, default=0.0, help="a ClaimingClient's update value")
    p.add_argument("--listen-port", type=int, default=0, help="where an edge serves")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    {"coordinator": coordinator, "worker": worker, "edge": edge}[a.role](a)


if __name__ == "__main__":
    main()
