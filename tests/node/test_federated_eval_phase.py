"""The coordinator's EVALUATE phase on a real hub, and the worker's side, without processes."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest

from murmura.node.federated_eval import evaluate_round
from murmura.node.worker import Worker
from murmura.strategy import FedAvg
from murmura.transport import codec
from murmura.transport.hub import Hub, Refused
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import DecodedInstruction, decode_result, result_frames
from murmura.types import EvaluateRes, Layout, RoundMetrics, Vector

LAYOUT = Layout(("w",), ((4,),))


def _header(
    node: str, loss: float, n: int, metrics: dict[str, float], error: str = ""
) -> pb.ResultHeader:
    return pb.ResultHeader(
        version=codec.PROTOCOL_VERSION, run_id="run", round=3, node=node, kind=pb.EVALUATE,
        num_examples=n, loss=loss, metrics=metrics, error=error,
    )  # fmt: skip


async def _phase() -> RoundMetrics:
    hub = Hub("run")
    for node in ("a", "b", "c", "d"):
        hub.touch(node)
    metrics = RoundMetrics(3, participants=4)
    weights = np.arange(4, dtype=np.float32)
    strategy = FedAvg(fraction_evaluate=1.0)
    phase = asyncio.create_task(evaluate_round(hub, strategy, 3, weights, LAYOUT, 5.0, metrics))
    while hub.current is None:
        await asyncio.sleep(0.01)
    sent = await hub.next_instruction("a", 0)
    assert sent is not None and sent.kind == pb.EVALUATE and sent.blob is not None
    results = {
        "a": (0.5, 10, {"accuracy": 0.9}, ""),
        "b": (1.5, 30, {"accuracy": 0.5}, ""),
        "c": (0.0, 0, {}, "OSError: no held-out data"),  # its evaluation raised
        "d": (float("nan"), 20, {"accuracy": 1.0}, ""),
    }
    for node, (loss, n, m, error) in results.items():
        header = _header(node, loss, n, m, error)
        assert hub.admit(node, header) is False  # binding accepted, then the figures checked
        with contextlib.suppress(Refused):  # the refused ones are the point here
            await hub.deliver(node, decode_result(result_frames(header, None)))
    await phase
    return metrics


def test_the_phase_aggregates_valid_results_and_lists_the_others() -> None:
    m = asyncio.run(_phase())
    assert m.federated_clients == 2 and m.extra["federated_examples"] == 40
    assert m.federated_accuracy == pytest.approx((10 * 0.9 + 30 * 0.5) / 40)
    assert m.federated_loss == pytest.approx((10 * 0.5 + 30 * 1.5) / 40)
    reasons = {f.node: f.reason for f in m.failures}
    assert set(reasons) == {"c", "d"}
    assert reasons["c"] == "evaluate: worker error: OSError: no held-out data"
    assert "evaluation loss nan is not a finite number" in reasons["d"]


class _Client:
    def __init__(self, result: EvaluateRes | Exception) -> None:
        self.result = result

    def fit(self, ins: object) -> object:
        raise AssertionError("not asked to train")

    def evaluate(self, weights: Vector) -> EvaluateRes:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def _instruction() -> DecodedInstruction:
    return DecodedInstruction("run", 3, "a", pb.EVALUATE, {}, np.zeros(4, np.float32), LAYOUT)


class _Link:
    """Records what the worker pushes."""

    node = "a"

    def __init__(self) -> None:
        self.pushed: list[tuple[str, int, object]] = []

    def push_evaluation(self, round_: int, res: EvaluateRes) -> None:
        self.pushed.append(("evaluation", round_, res))

    def push_error(self, round_: int, kind: int, error: str) -> None:
        self.pushed.append(("error", round_, (pb.Kind.Name(kind), error)))


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        (
            _Client(EvaluateRes(0.25, 7, {"accuracy": 1})),
            ("evaluation", 3, EvaluateRes(0.25, 7, {"accuracy": 1.0})),
        ),
        (_Client(RuntimeError("no data")), ("error", 3, ("EVALUATE", "RuntimeError: no data"))),
        (
            _Client(EvaluateRes(0.25, -3)),
            ("error", 3, ("EVALUATE", "ValueError: num_examples -3 is negative")),
        ),
        (object(), ("evaluation", 3, EvaluateRes(0.0, 0))),  # cannot evaluate: holds no data
    ],
)
def test_the_worker_reports_what_the_wire_can_carry(client: object, expected: object) -> None:
    link = _Link()
    Worker(link, client)._evaluate(_instruction())  # type: ignore[arg-type]
    assert link.pushed == [expected]
