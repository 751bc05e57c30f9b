"""What a node checks in its parent's instructions (issue 11, defect 5): fast unit tests."""

from __future__ import annotations

import math
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from murmura.client import LocalSGD
from murmura.config.training import ClientSection
from murmura.errors import ConfigError, InstructionRejected
from murmura.node import instructions as ins
from murmura.node.instructions import (
    InstructionLimits,
    check_config,
    check_instruction,
    check_model,
    check_secagg_setup,
)
from murmura.node.secagg_worker import SecureRound
from murmura.transport.proto import secagg_pb2 as spb
from murmura.types import Layout

LAYOUT = Layout(("w", "b"), ((3, 4), (4,)))
LIMITS = InstructionLimits()
GOOD = {"epochs": 2, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4,
        "proximal_mu": 0.01}  # fmt: skip


def _model(size: int = LAYOUT.size) -> np.ndarray:
    return np.linspace(-1, 1, size, dtype=np.float32)


def _rejected(match: str, **config: Any) -> None:
    with pytest.raises(InstructionRejected, match=match):
        check_instruction(_model(), LAYOUT, config, LAYOUT, LIMITS)


def test_a_good_instruction_passes_with_every_key_strategies_send() -> None:
    from murmura.strategy.scaffold import encode_vector

    w = _model()
    config = {**GOOD, "scaffold_c": encode_vector(np.zeros(LAYOUT.size)), "dp_clip_norm": 0.5,
              "secagg": True}  # fmt: skip
    assert check_instruction(w, LAYOUT, config, LAYOUT, LIMITS) is w
    assert check_instruction(w, LAYOUT, {}, None, LIMITS) is w  # a client with no known model


def test_the_keys_are_those_the_coordinator_and_strategies_send() -> None:
    from murmura.strategy.dp import CLIP_KEY
    from murmura.strategy.scaffold import CONFIG_KEY
    from murmura.transport.secagg_service import SECAGG_CONFIG_KEY

    assert (ins.CLIP_KEY, ins.SCAFFOLD_KEY, ins.SECAGG_KEY) == (CLIP_KEY, CONFIG_KEY,
                                                               SECAGG_CONFIG_KEY)  # fmt: skip
    check_config(ClientSection().model_dump(), LIMITS)  # what murmura server sends each round
    assert set(LocalSGD.__dataclass_fields__) <= set(ins._CHECKS)


def test_a_model_of_another_size_or_layout_is_refused() -> None:
    one = np.ones(1, dtype=np.float32)
    with pytest.raises(InstructionRejected, match="1 values, the task's model has 16"):
        check_model(one, Layout(("w",), ((1,),)), LAYOUT)
    transposed = Layout(("w", "b"), ((4, 3), (4,)))
    with pytest.raises(InstructionRejected, match=r"'w' has shape \(4, 3\), the task's model"):
        check_model(_model(), transposed, LAYOUT)
    renamed = Layout(("v", "b"), ((3, 4), (4,)))
    with pytest.raises(InstructionRejected, match="tensors"):
        check_model(_model(), renamed, LAYOUT)
    with pytest.raises(InstructionRejected, match="its layout 16"):
        check_model(_model(15), LAYOUT, None)
    with pytest.raises(InstructionRejected, match="float64"):
        check_model(_model().astype(np.float64), LAYOUT, LAYOUT)
    with pytest.raises(InstructionRejected, match="no model"):
        check_model(None, None, LAYOUT)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_model_is_refused(bad: float) -> None:
    w = _model()
    w[[3, 9]] = bad
    with pytest.raises(InstructionRejected, match="2 non-finite values of 16"):
        check_model(w, LAYOUT, LAYOUT)


def test_hyper_parameters_must_be_finite_typed_and_bounded() -> None:
    _rejected("lr = nan is not finite", lr=math.nan)
    _rejected("lr = inf is not finite", lr=math.inf)
    _rejected(r"lr = 0.0 is outside \(0.0, 10.0\]", lr=0.0)
    _rejected(r"lr = 11.0 is outside", lr=11.0)
    _rejected("lr = '0.1' is not a number", lr="0.1")
    _rejected("lr = True is not a number", lr=True)
    _rejected(r"epochs = 1000000000 is outside \[1, 1000\]", epochs=10**9)
    _rejected("epochs = 0 is outside", epochs=0)
    _rejected("epochs = 1.5 is not an integer", epochs=1.5)
    _rejected("batch_size = 2000000 is outside", batch_size=2_000_000)
    _rejected(r"momentum = 1.0 is outside \[0.0, 1.0\)", momentum=1.0)
    _rejected("weight_decay = -0.1 is outside", weight_decay=-0.1)
    _rejected("proximal_mu = nan is not finite", proximal_mu=math.nan)
    _rejected("dp_clip_norm = 0.0 is outside", dp_clip_norm=0.0)
    _rejected("secagg = 1 is not a boolean", secagg=1)
    _rejected("unknown instruction key 'lr_schedule'", lr_schedule="cosine")


def test_scaffold_variate_must_fit_the_model() -> None:
    from murmura.strategy.scaffold import encode_vector

    _rejected("not valid base64", scaffold_c="not base64!")
    _rejected("scaffold_c: 60 bytes", scaffold_c=encode_vector(np.zeros(15)))
    _rejected("non-finite", scaffold_c=encode_vector(np.full(16, np.nan)))
    _rejected("not base64 text", scaffold_c=3)


def test_the_worker_sets_its_own_limits() -> None:
    tight = InstructionLimits(max_epochs=5, max_batch_size=64, max_lr=0.5)
    check_config({"epochs": 5, "batch_size": 64, "lr": 0.5}, tight)
    for key, value in (("epochs", 6), ("batch_size", 65), ("lr", 0.51)):
        with pytest.raises(InstructionRejected, match=key):
            check_config({key: value}, tight)
    for bad in ({"max_epochs": 0}, {"max_lr": math.nan}, {"max_lr": 0.0}):
        with pytest.raises(ConfigError):
            InstructionLimits(**bad)  # type: ignore[arg-type]


def test_a_secure_round_setup_must_fit_the_update() -> None:
    check_secagg_setup(5, 16, 4, 0.0, 0.0, 16)
    with pytest.raises(InstructionRejected, match="dim 1, the update has 16"):
        check_secagg_setup(5, 1, 0, 0.0, 0.0, 16)
    with pytest.raises(InstructionRejected, match="index 5 outside a cohort of 5"):
        check_secagg_setup(5, 16, 5, 0.0, 0.0, 16)
    with pytest.raises(InstructionRejected, match="dp_clip_norm = nan"):
        check_secagg_setup(5, 16, 0, math.nan, 0.0, 16)


class _SetupLink:
    """Answers the ADVERTISE fetch with ``setup``; anything else would be a failure."""

    def __init__(self, setup: spb.SecAggSetup) -> None:
        self.setup = setup
        self.link = SimpleNamespace(run_id="run", node="w0")
        self.sent: list[int] = []

    def fetch(self, round_: int, step: int) -> Any:
        return SimpleNamespace(status=spb.SECAGG_READY, payload=self.setup.SerializeToString())

    def send(self, round_: int, step: int, payload: bytes) -> Any:
        self.sent.append(step)
        return SimpleNamespace(accepted=True, reason="")


@pytest.mark.parametrize(
    "fields",
    [{"dim": 1}, {"neighbours": 3}, {"clip": math.nan}, {"index": 9}, {"dp_clip_norm": math.inf}],
)
def test_a_secure_worker_leaves_a_round_with_a_bad_setup(fields: dict[str, Any]) -> None:
    setup = spb.SecAggSetup(
        num_clients=5, dim=16, neighbours=4, threshold=3, clip=1.0, max_weight=20.0,
        graph_seed=7, rounding="deterministic", cohort=list("abcde"), index=2,
    )  # fmt: skip
    for key, value in fields.items():
        setattr(setup, key, value)
    link = _SetupLink(setup)
    secure = SecureRound(link, 1, threading.Event())  # type: ignore[arg-type]
    assert secure.run(_model(), 10) is False  # no exception: the worker serves the next round
    assert link.sent == []


class _ClosedLink:
    """A link closed while the worker trained (its job aborted): every call fails."""

    node = "w0"

    def __init__(self) -> None:
        self.errors: list[int] = []

    def push(self, *args: Any) -> Any:
        raise ValueError("Cannot invoke RPC on closed channel!")

    def push_error(self, round_: int, kind: int, error: str) -> None:
        self.errors.append(round_)

    def close(self) -> None:
        pass


def test_a_worker_closed_while_it_trains_drops_the_round_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from murmura.node.worker import Worker
    from murmura.transport.streams import DecodedInstruction
    from murmura.types import FitRes

    link = _ClosedLink()
    worker: Worker

    def fit(_: Any) -> FitRes:
        worker.close()  # the job is aborted while the site trains
        return FitRes(np.zeros(16, np.float32), 10)

    worker = Worker(link, SimpleNamespace(fit=fit), layout=LAYOUT)  # type: ignore[arg-type]
    weights = np.zeros(16, np.float32)
    worker._fit(DecodedInstruction("run", 3, "w0", 0, dict(GOOD), weights, LAYOUT))
    assert link.errors == [] and "result not sent" not in caplog.text
    link2 = _ClosedLink()  # not stopped: the same failure is a round that failed, reported
    worker = Worker(link2, SimpleNamespace(fit=lambda _: FitRes(weights, 10)), layout=LAYOUT)  # type: ignore[arg-type]
    worker._fit(DecodedInstruction("run", 3, "w0", 0, dict(GOOD), weights, LAYOUT))
    assert link2.errors == [3] and "result not sent" in caplog.text
