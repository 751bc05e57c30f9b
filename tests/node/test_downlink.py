"""A compressed downlink over the wire (``murmura.node.downlink``): the coordinator's and the
worker's sides, through real Pull frames, against the simulation's ``Downlink``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from murmura.compress import make_codec
from murmura.compress.downlink import Downlink
from murmura.errors import ProtocolError
from murmura.node.downlink import FILE, DownlinkPlan, HeldModel, HeldModels, model_sha256
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import DecodedInstruction, decode_instruction, instruction_frames
from murmura.types import Layout

D = 1000
LAYOUT = Layout(("w",), ((D,),))
CODEC = make_codec("topk", ratio=0.1)
SEED = 7


def _models(rounds: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    steps = rng.normal(size=(rounds, D)).astype(np.float32)
    return list(np.cumsum(steps, axis=0, dtype=np.float32))


def _pull(
    sender: HeldModels, worker: HeldModel, node: str, round_: int, weights: np.ndarray
) -> tuple[DecodedInstruction, int]:
    """One FIT pull through the real frames: (what the worker trains from, bytes sent)."""
    blob, base = sender.instruction(node, round_, weights, LAYOUT, worker.digest)
    header = pb.InstructionHeader(version=2, run_id="r", round=round_, node=node, kind=pb.FIT)
    header.base_sha256 = base
    ins = decode_instruction(instruction_frames(header, blob), downlink=worker.codec)
    return worker.receive(ins), len(blob.data)


def test_the_wire_sends_the_simulations_deltas_and_bytes() -> None:
    sender, worker = HeldModels(DownlinkPlan(CODEC, SEED)), HeldModel(CODEC)
    sim = Downlink(CODEC, "worker-0", SEED)
    for r, weights in enumerate(_models(4), start=1):
        ins, nbytes = _pull(sender, worker, "worker-0", r, weights)
        assert nbytes == sim.send(r, weights) == sender.sent["worker-0", r]
        assert sim.held is not None and ins.weights is not None
        np.testing.assert_array_equal(ins.weights, sim.held)  # bitwise
    assert nbytes < 4 * D / 5  # a delta, not the float32 model


def test_a_worker_that_missed_rounds_gets_a_delta_and_a_restarted_one_the_model() -> None:
    sender, worker = HeldModels(DownlinkPlan(CODEC, SEED)), HeldModel(CODEC)
    models = _models(5)
    _pull(sender, worker, "a", 1, models[0])
    ins, nbytes = _pull(sender, worker, "a", 4, models[3])  # rounds 2 and 3 missed
    assert nbytes < 4 * D and ins.weights is not None
    sim = Downlink(CODEC, "a", SEED)
    sim.send(1, models[0])
    sim.send(4, models[3])
    np.testing.assert_array_equal(ins.weights, sim.held)
    restarted = HeldModel(CODEC)  # holds nothing: the float32 model
    ins, nbytes = _pull(sender, restarted, "a", 5, models[4])
    assert nbytes == 4 * D and ins.weights is not None
    np.testing.assert_array_equal(ins.weights, models[4])


def test_a_lost_delta_is_sent_again_against_the_model_still_held() -> None:
    sender, worker = HeldModels(DownlinkPlan(CODEC, SEED)), HeldModel(CODEC)
    models = _models(3)
    _pull(sender, worker, "a", 1, models[0])
    first, _ = sender.instruction("a", 2, models[1], LAYOUT, worker.digest)  # never arrived
    again, base = sender.instruction("a", 2, models[1], LAYOUT, worker.digest)
    assert bytes(first.data) == bytes(again.data) and base == worker.digest


def test_a_delta_against_another_model_is_refused() -> None:
    sender, worker = HeldModels(DownlinkPlan(CODEC, SEED)), HeldModel(CODEC)
    models = _models(2)
    _pull(sender, worker, "a", 1, models[0])
    blob, base = sender.instruction("a", 2, models[1], LAYOUT, worker.digest)
    header = pb.InstructionHeader(version=2, run_id="r", round=2, node="a", kind=pb.FIT)
    header.base_sha256 = base
    other = HeldModel(CODEC)
    other.held, other.digest = models[1], model_sha256(models[1])
    ins = decode_instruction(instruction_frames(header, blob), downlink=CODEC)
    with pytest.raises(ProtocolError, match="this worker holds"):
        other.receive(ins)
    with pytest.raises(ProtocolError, match="downlink codec this node agreed to"):
        decode_instruction(instruction_frames(header, blob))  # no downlink agreed
    with pytest.raises(ProtocolError, match="agreed to"):
        decode_instruction(instruction_frames(header, blob), downlink=make_codec("float16"))
    header.base_sha256 = b"\x01" * 5
    with pytest.raises(ProtocolError, match="32-byte base digest"):
        decode_instruction(instruction_frames(header, blob), downlink=CODEC)


def test_the_references_survive_a_restart_and_a_damaged_file_costs_a_full_model(
    tmp_path: Path,
) -> None:
    sender, worker = HeldModels(DownlinkPlan(CODEC, SEED)), HeldModel(CODEC)
    models = _models(3)
    _pull(sender, worker, "a", 1, models[0])
    _pull(sender, worker, "a", 2, models[1])
    sender.save(tmp_path)
    resumed = HeldModels(DownlinkPlan(CODEC, SEED))
    resumed.load(tmp_path, D)
    _, nbytes = _pull(resumed, worker, "a", 3, models[2])
    assert nbytes < 4 * D  # a delta, as the first process would have sent
    raw = bytearray((tmp_path / FILE).read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / FILE).write_bytes(bytes(raw))
    damaged = HeldModels(DownlinkPlan(CODEC, SEED))
    damaged.load(tmp_path, D)
    assert damaged.refs == {}
    _, nbytes = _pull(damaged, worker, "a", 3, models[2])
    assert nbytes == 4 * D
