"""A transport is the registry's entry: a real Worker and a real Coordinator over one in memory.

``murmura.transport.registry`` names the transports; this test adds one that carries the
star protocol in this process (``LocalChannel`` for the server half, a ``Link`` over a
mailbox for the client half) and runs the unchanged ``Coordinator.run`` and ``Worker.run``
over it, without a socket: two rounds, ending with the simulation's model. A transport that
cannot carry secure aggregation, a compressed downlink or asynchronous dispatches refuses them
when the coordinator is built, naming the setting.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from murmura.compress.base import Codec
from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.federation.config import load_federation
from murmura.node.coordinator import Coordinator, CoordinatorSettings
from murmura.node.deploy import build_coordinator, split_config
from murmura.node.downlink import DownlinkPlan
from murmura.node.worker import Worker, WorkerStats
from murmura.sim.builder import build_experiment
from murmura.sim.runtime import Simulation
from murmura.strategy import FedAvg
from murmura.transport.base import ASYNC, SECAGG
from murmura.transport.channel import Channel, LocalChannel
from murmura.transport.grpc_server import ServerOptions
from murmura.transport.hub import Hub, Outgoing
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.registry import TRANSPORTS, refuse_missing, transport
from murmura.transport.streams import DecodedInstruction
from murmura.types import EvaluateRes, FitRes, Layout, Vector

RUN = "memory-run"


class Mailbox:
    """One node's two queues: instructions to its worker, answers back."""

    def __init__(self) -> None:
        self.instructions: queue.Queue[DecodedInstruction] = queue.Queue()
        self.answers: queue.Queue[FitRes | EvaluateRes | str] = queue.Queue()


class MemoryLink:
    """A worker's ``Link`` through its mailbox: pull takes an instruction, push puts an answer."""

    def __init__(self, node: str, box: Mailbox) -> None:
        self.node, self.target, self.run_id, self.box = node, "memory", "", box
        self.closed = False

    def register(self) -> pb.RegisterReply:
        self.run_id = RUN
        return pb.RegisterReply(run_id=RUN, node=self.node, round=0, heartbeat_ms=50)

    def pull(
        self, after_round: int, held: bytes = b"", downlink: Codec | None = None
    ) -> DecodedInstruction:
        return self.box.instructions.get(timeout=120)

    def push(
        self, round_: int, res: FitRes, layout: Layout, wire: tuple[str, bytes] | None = None
    ) -> pb.PushReply:
        self.box.answers.put(res)
        return pb.PushReply(accepted=True)

    def push_evaluation(self, round_: int, res: EvaluateRes) -> pb.PushReply:
        self.box.answers.put(res)
        return pb.PushReply(accepted=True)

    def push_stats(self, round_: int, stats: Sequence[float], num_examples: int) -> pb.PushReply:
        self.box.answers.put("statistics are not carried in memory")
        return pb.PushReply(accepted=True)

    def push_error(self, round_: int, kind: int, error: str) -> pb.PushReply:
        self.box.answers.put(error)
        return pb.PushReply(accepted=True)

    def heartbeat(self, round_: int) -> pb.HeartbeatReply:
        return pb.HeartbeatReply(round=round_)

    def close(self) -> None:
        self.closed = True


class MemoryChannel(LocalChannel):
    """``LocalChannel`` whose handler hands each instruction to the node's worker and waits."""

    def __init__(self, boxes: dict[str, Mailbox]) -> None:
        super().__init__(list(boxes), self._answer, RUN)
        self.boxes = boxes

    def _answer(self, node: str, out: Outgoing, weights: Vector) -> FitRes | EvaluateRes:
        box = self.boxes[node]
        box.instructions.put(
            DecodedInstruction(
                RUN, out.round, node, out.kind, dict(out.config), weights, out.layout
            )
        )
        got = box.answers.get(timeout=120)
        if isinstance(got, str):
            raise RuntimeError(got)
        return got

    async def finish(self) -> None:
        await super().finish()
        for node, box in self.boxes.items():
            box.instructions.put(DecodedInstruction(RUN, 0, node, pb.SHUTDOWN, {}, None, None))


@dataclass
class MemoryServing:
    channel: Channel
    port: int = 0

    async def stop(self) -> None:
        return None


class InProcess:
    """The star protocol in this process: links are made first, then the server serves them."""

    features: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.boxes: dict[str, Mailbox] = {}
        self.served: Hub | None = None

    async def serve(
        self, hub: Hub, opts: ServerOptions, extra: Sequence[Any] = ()
    ) -> MemoryServing:
        self.served = hub
        return MemoryServing(MemoryChannel(self.boxes))

    def link(self, target: str, node: str, credentials: Any, opts: Any = None) -> MemoryLink:
        return MemoryLink(node, self.boxes.setdefault(node, Mailbox()))


CARRIER = InProcess()
TRANSPORTS.register("memory")(CARRIER)


@pytest.fixture
def memory() -> InProcess:
    """The registered in-process transport, with no node yet."""
    CARRIER.boxes.clear()
    CARRIER.served = None
    return CARRIER


def test_a_worker_and_a_coordinator_over_a_registered_transport_match_the_simulation(
    tmp_path: Path, memory: InProcess
) -> None:
    run = {
        "run": {"name": "seam", "rounds": 2, "seed": 5},
        "task": {"name": "digits"},
        "partition": {"kind": "quantity", "num_clients": 3},
        "client": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        "strategy": {"name": "fedadam", "server_lr": 0.05},
        "evaluation": {"every": 0},
    }
    cfg = config_from_dict(run)
    simulated = build_experiment(cfg).simulation
    assert isinstance(simulated, Simulation)
    simulated.run(2)
    exp = build_experiment(cfg)
    sim = exp.simulation
    assert isinstance(sim, Simulation)
    settings = CoordinatorSettings(
        state_dir=tmp_path / "state", rounds=2, run_name="seam", round_timeout_s=120.0,
        join_timeout_s=0.0, shutdown_grace_s=0.0, evaluate_every=0,
        client_config=cfg.client.model_dump(),
    )  # fmt: skip
    start = sim.weights.copy()
    coordinator = Coordinator(
        sim.strategy, start, exp.model.layout, settings,
        ServerOptions(port=0, insecure=True), transport="memory",
    )  # fmt: skip
    workers = [
        Worker(transport("memory").link("memory", n, None), c) for n, c in sim.clients.items()
    ]
    stats: dict[str, WorkerStats] = {}

    def serve(worker: Worker) -> None:
        stats[worker.node] = worker.run()

    threads = [threading.Thread(target=serve, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        result = asyncio.run(coordinator.run())
    finally:
        for t in threads:
            t.join(30)
        for w in workers:
            w.close()
    np.testing.assert_allclose(result.weights, simulated.weights, rtol=0, atol=1e-6)
    assert np.abs(result.weights - start).max() > 1e-3  # the workers trained
    assert memory.served is not None and memory.served.run_id == result.run_id
    assert sorted(stats) == sorted(sim.clients) == sorted(memory.boxes)
    assert {s.reason for s in stats.values()} == {"shutdown"}
    assert [s.rounds for s in stats.values()] == [2, 2, 2]
    assert all(isinstance(w.link, MemoryLink) and w.link.closed for w in workers)


def test_an_unknown_transport_is_refused_at_load_time_naming_the_section(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text('[task]\nname = "digits"\n\n[server]\ntransport = "pigeon"\n')
    with pytest.raises(ConfigError, match=r"(?s)\[server\].*unknown transport 'pigeon'"):
        split_config(path)
    path.write_text('[task]\nname = "digits"\n\n[server]\ntransport = "grpc"\n')
    assert split_config(path)[1].transport == "grpc"
    with pytest.raises(
        ConfigError, match=r"^\[server\] transport: unknown transport 'pigeon'; valid: grpc"
    ):
        transport("pigeon")


def test_a_transport_refuses_what_it_cannot_carry_naming_the_setting(
    tmp_path: Path, memory: InProcess
) -> None:
    with pytest.raises(ConfigError, match=r"^\[secagg\] enabled needs a transport .*'memory'"):
        refuse_missing("memory", {SECAGG})
    with pytest.raises(ConfigError, match=r"^\[clock\] mode = 'async' needs a transport"):
        refuse_missing("memory", {ASYNC})
    assert refuse_missing("grpc", {SECAGG, ASYNC}) is TRANSPORTS.get("grpc")
    settings = CoordinatorSettings(state_dir=tmp_path / "state", downlink=DownlinkPlan(_codec(), 0))
    with pytest.raises(ConfigError, match=r"^\[compression\] downlink needs a transport"):
        Coordinator(
            FedAvg(), np.zeros(4, np.float32), Layout(("w",), ((4,),)), settings,
            ServerOptions(port=0, insecure=True), transport="memory",
        )  # fmt: skip
    assert not (tmp_path / "state").exists()  # refused before any state is opened


def _codec() -> Codec:
    from murmura.compress import make_codec

    return make_codec("float16")


def test_roles_still_on_grpc_refuse_another_transport(tmp_path: Path, memory: InProcess) -> None:
    """A tree's edges and a federation's sites dial gRPC: their configs may not pick another."""
    tree = Path(__file__).parents[2] / "examples" / "digits-hierarchical.toml"
    cfg, section = split_config(tree, ["server.transport=memory"])
    with pytest.raises(ConfigError, match=r"^\[server\] transport = 'memory' with \[topology\]"):
        build_coordinator(cfg, section, insecure=True)
    fed = tmp_path / "federation.toml"
    fed.write_text('[server]\ntransport = "memory"\n\n[federation]\n')
    with pytest.raises(ConfigError, match=r"\[server\] transport = 'memory': the federation"):
        load_federation(fed)


def test_a_peer_and_an_edge_config_may_not_pick_another_transport(tmp_path: Path) -> None:
    """``murmura peer`` and ``murmura edge`` speak gRPC only: a [server] transport is refused."""
    from murmura.node.topology_deploy import build_edge, build_peer

    run = '[task]\nname = "digits"\n[partition]\nnum_clients = 4\n'
    peer = tmp_path / "peer.toml"
    peer.write_text(
        run + '[topology]\nkind = "ring"\n[server]\ntransport = "memory"\n'
        '[peers]\naddresses = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"]\n'
    )
    with pytest.raises(ConfigError, match="transport = 'memory': murmura peer speaks 'grpc'"):
        build_peer(peer, 0, insecure=True)
    edge = tmp_path / "edge.toml"
    edge.write_text(
        run + '[topology]\nkind = "tree"\nedges = 2\n[server]\ntransport = "memory"\n'
        '[edge]\nname = "edge-0"\nparent = "127.0.0.1:1"\n'
    )
    with pytest.raises(ConfigError, match="transport = 'memory': murmura edge speaks 'grpc'"):
        build_edge(edge, insecure=True)
