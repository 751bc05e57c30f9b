"""A compressed downlink over gRPC: each worker gets the model as a delta against the one it holds.

The same step as the simulation (``murmura.compress.downlink.delta_step``): the coordinator
sends ``C(global - held)`` and both ends add the decoded delta to ``held``, with the same
random stream per (seed, round, node), so the bytes on the wire equal the simulation's.

The coordinator never guesses what a worker holds: a worker names it in every pull (the
SHA-256 of its held model, ``PullRequest.held_sha256``) and the coordinator keeps, per node,
the models it may hold (``HeldModels``: the last base a delta went against and the model that
delta made), keyed by that digest. A digest it knows gets a delta against that model, which
the instruction names (``InstructionHeader.base_sha256``); the worker adds it only to a model
of that digest (``HeldModel``) and refuses it otherwise. A worker that holds nothing (a first
round, a restart) or a model the coordinator does not know gets the float32 model, and holds
it from then on. A worker that missed rounds gets a delta against the model it still holds,
as an unsampled client does in the simulation. The references go into the run folder with
each checkpoint (``downlink.safetensors``), so a resumed coordinator keeps sending deltas; a
lost or damaged file only costs one full model per worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from murmura.compress.base import Codec, spec
from murmura.compress.downlink import delta_step
from murmura.errors import CheckpointError, ProtocolError
from murmura.storage import load_tensors_verified, save_tensors_atomically
from murmura.transport import codec as wire
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import DecodedInstruction
from murmura.types import Layout, Vector

log = logging.getLogger(__name__)

FILE = "downlink.safetensors"
"""The coordinator's references in its run folder, rewritten with each checkpoint."""
_REFS = "murmura.downlink"


def model_sha256(weights: Vector) -> bytes:
    """SHA-256 of a model as little-endian float32: what a worker names in its pull."""
    return hashlib.sha256(np.ascontiguousarray(weights, dtype="<f4").data).digest()


@dataclass(frozen=True, slots=True)
class DownlinkPlan:
    """``[compression] downlink`` of a coordinator: its codec and the run's seed."""

    codec: Codec
    seed: int


class HeldModels:
    """The coordinator's side: per node, the models it may hold, by digest; per node, bytes sent."""

    def __init__(self, plan: DownlinkPlan) -> None:
        self.plan = plan
        self.refs: dict[str, dict[bytes, Vector]] = {}
        self.sent: dict[tuple[str, int], int] = {}
        """Bytes of the model last served to (node, round)."""

    def instruction(
        self, node: str, round_: int, weights: Vector, layout: Layout, held: bytes
    ) -> tuple[wire.Blob, bytes]:
        """(the model's blob for ``node``, the base digest it is a delta against or b"")."""
        base = self.refs.get(node, {}).get(held) if held else None
        if base is None:
            model = np.array(weights, dtype=np.float32)
            blob = wire.encode_blob(model, layout)
            self.refs[node] = {bytes(blob.header.sha256): model}
            held = b""
        else:
            p = self.plan
            framed, new = delta_step(p.codec, p.seed, node, round_, weights, base)
            blob = wire.compressed_blob(framed, spec(p.codec), layout)
            blob.header.sha256 = hashlib.sha256(framed).digest()
            self.refs[node] = {held: base, model_sha256(new): new}  # received or not
        self.sent = {k: v for k, v in self.sent.items() if k[1] >= round_}
        self.sent[node, round_] = len(blob.data)
        return blob, held

    def save(self, run_path: Path) -> None:
        """Write the references next to the checkpoints (atomically)."""
        index: list[list[str]] = []
        tensors: dict[str, Vector] = {}
        for node, refs in sorted(self.refs.items()):
            for digest, model in refs.items():
                tensors[f"ref/{len(index)}"] = model
                index.append([node, digest.hex()])
        save_tensors_atomically(run_path / FILE, tensors, {_REFS: json.dumps(index)})

    def load(self, run_path: Path, size: int) -> None:
        """Read the references a previous process saved; none (with a warning) if unusable."""
        path = run_path / FILE
        if not path.exists():
            return
        try:
            tensors, meta = load_tensors_verified(path)
            index = json.loads(meta[_REFS])
            refs: dict[str, dict[bytes, Vector]] = {}
            for i, (node, digest) in enumerate(index):
                model = np.asarray(tensors[f"ref/{i}"], dtype=np.float32)
                if model.shape != (size,) or model_sha256(model).hex() != digest:
                    raise CheckpointError(f"reference {i} of {node!r} is not the model named")
                refs.setdefault(str(node), {})[bytes.fromhex(digest)] = model
        except (CheckpointError, KeyError, ValueError, TypeError) as exc:
            log.warning(
                "node=coordinator: %s unusable (%s): every worker gets the float32 model once",
                path,
                exc,
            )
            return
        self.refs = refs


class HeldModel:
    """The worker's side: the model it holds, and the deltas that move it."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.held: Vector | None = None
        self.digest = b""
        """SHA-256 of ``held`` (b"": none), named in every pull."""

    def receive(self, ins: DecodedInstruction) -> DecodedInstruction:
        """``ins`` with the model itself: a float32 FIT model is held, a delta added to it."""
        if not ins.base_sha256:
            if ins.kind == pb.FIT and ins.weights is not None:
                self.held = np.array(ins.weights, dtype=np.float32)
                self.digest = model_sha256(self.held)
            return ins
        if ins.kind != pb.FIT or ins.weights is None:
            raise ProtocolError(f"a {pb.Kind.Name(ins.kind)} instruction sent as a delta")
        if self.held is None or ins.base_sha256 != self.digest:
            have = self.digest.hex()[:12] or "none"
            raise ProtocolError(
                f"round {ins.round}: a delta against model {ins.base_sha256.hex()[:12]}, "
                f"this worker holds {have}"
            )
        self.held = self.held + ins.weights
        self.digest = model_sha256(self.held)
        return replace(ins, weights=self.held.copy(), base_sha256=b"")


def downlink_plan(cfg: object) -> DownlinkPlan | None:
    """The ``[compression] downlink`` of a run config for a coordinator, or None."""
    from murmura.compress.downlink import downlink_codec
    from murmura.config import Config

    assert isinstance(cfg, Config)
    codec = downlink_codec(cfg)
    return None if codec is None else DownlinkPlan(codec, cfg.run.seed)


def held_model(cfg: object) -> HeldModel | None:
    """The ``[compression] downlink`` of a run config for a worker, or None."""
    plan = downlink_plan(cfg)
    return None if plan is None else HeldModel(plan.codec)
