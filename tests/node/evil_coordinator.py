"""A coordinator that sends bad instructions: the real ``Coordinator`` with a hook on its rounds.

Run as a script (``python tests/node/evil_coordinator.py ...``). It trains the digits task's
model with FedAvg; in round r <= len(--attacks) it sends, instead of its model and ``GOOD``
hyper-parameters, what the r-th attack makes of them (its own model is left unchanged); the
rounds after those are good.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from murmura.aggregate.buffer import UpdateBuffer
from murmura.engine.server_round import CohortPlan, instructions
from murmura.node.coordinator import Coordinator, CoordinatorSettings
from murmura.transport import keys
from murmura.transport.grpc_server import ServerOptions
from murmura.transport.hub import RoundOutcome
from murmura.types import Layout, Scalar, Vector

GOOD: dict[str, Scalar] = {"epochs": 1, "batch_size": 32, "lr": 0.05}
Attack = Callable[[Vector, Layout], tuple[Vector, Layout, dict[str, Scalar]]]


def _one_element(w: Vector, layout: Layout) -> tuple[Vector, Layout, dict[str, Scalar]]:
    return np.ones(1, dtype=np.float32), Layout(("w",), ((1,),)), GOOD


def _nan_model(w: Vector, layout: Layout) -> tuple[Vector, Layout, dict[str, Scalar]]:
    bad = w.copy()
    bad[7] = np.nan
    return bad, layout, GOOD


ATTACKS: dict[str, Attack] = {
    "one-element": _one_element,
    "nan-model": _nan_model,
    "nan-lr": lambda w, layout: (w, layout, {**GOOD, "lr": float("nan")}),
    "huge-epochs": lambda w, layout: (w, layout, {**GOOD, "epochs": 10**9}),
}


def digits_model() -> tuple[Vector, Layout]:
    """The digits task's initial model (seed 0) and its layout."""
    import torch

    from murmura.client import FlatModel
    from murmura.tasks import load_task

    torch.manual_seed(0)
    model = FlatModel(load_task("digits").build_model())
    return model.get(), model.layout


class EvilCoordinator(Coordinator):
    """Sends ``ATTACKS[plan[r - 1]]`` of its model and config in round r; later rounds: good."""

    plan: list[str] = list(ATTACKS)

    async def _collect(self, round_plan: CohortPlan, buffer: UpdateBuffer) -> RoundOutcome:
        round_ = round_plan.ins.round
        attack = ATTACKS[self.plan[round_ - 1]] if round_ <= len(self.plan) else None
        if attack is None:
            return await super()._collect(round_plan, buffer)
        saved = self.layout
        weights, layout, config = attack(self.weights, self.layout)
        self.layout = layout
        evil = CohortPlan(instructions(self.strategy, round_, weights, config), round_plan.cohort)
        try:
            return await super()._collect(evil, buffer)
        finally:
            self.layout = saved


def main() -> None:
    from murmura.strategy import FedAvg

    p = argparse.ArgumentParser()
    p.add_argument("--keys", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--attacks", default=",".join(ATTACKS), help="one per round, in order")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    f = keys.node_files(a.keys, "coordinator")
    weights, layout = digits_model()
    settings = CoordinatorSettings(
        state_dir=Path(a.state),
        rounds=a.rounds,
        run_name="evil",
        round_timeout_s=a.timeout,
        join_timeout_s=60,
        heartbeat_s=0.3,
        lost_after_s=5.0,
        client_config=GOOD,
        shutdown_grace_s=1.0,
    )
    server = ServerOptions(
        port=a.port,
        credentials=keys.Credentials.load(f.cert, f.key, f.ca),
        allowlist=frozenset({"w0"}),
    )
    strategy = FedAvg(min_clients=1, seed=0)
    coordinator = EvilCoordinator(strategy, weights, layout, settings, server)
    coordinator.plan = [x for x in a.attacks.split(",") if x]
    asyncio.run(coordinator.run())


if __name__ == "__main__":
    main()
