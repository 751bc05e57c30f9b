"""Decoders for the two chunked streams: instructions (coordinator -> worker), results (back).

A stream is one header message followed by the chunks its blob header announced; a result
stream with an update ends with a trailer that carries the update's digest (BLAKE3, named in
the header: ``murmura.transport.digests``; the worker hashes while it sends) and the
worker's signature of the update (``murmura.update_signing``). A result whose header carries
an ``error`` (the worker's fit or evaluate raised) is the header alone.
The readers take raw bytes, one message at a time, and raise only ``ProtocolError`` subclasses;
the caller checks the header's binding (run, round, node) before feeding any chunk, so nothing
is allocated for a message that will be refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from murmura.compress.base import Codec
from murmura.transport import codec
from murmura.transport.codec import BlobAssembler, MalformedMessage
from murmura.transport.digests import (
    UPDATE_DIGEST,
    check_update_digest,
    update_digest,
    update_hasher,
)
from murmura.transport.frames import parse_chunk_frame
from murmura.transport.proto import murmura_pb2 as pb
from murmura.types import Layout, Scalar, Vector
from murmura.update_signing import MAX_SIGNATURE_BYTES
from murmura.validation import MAX_METRICS

MAX_ERROR_CHARS = 512
"""Longest ``ResultHeader.error`` a worker sends and a coordinator accepts."""

Sign = Callable[[bytes], bytes]
"""Makes the trailer's signature from the update's digest (the worker's ``UpdateSigner``)."""


@dataclass(frozen=True, slots=True)
class DecodedResult:
    """A worker's result after every check: binding, sizes, layout and digest."""

    run_id: str
    round: int
    node: str
    kind: int
    num_examples: int
    loss: float
    metrics: dict[str, float]
    update: Vector | None
    digest: bytes
    """The update's digest (``UPDATE_DIGEST``); without an update, that of the header."""
    error: str = ""
    """The worker's report that its fit or evaluate raised; such a result has nothing else."""
    signature: bytes = b""
    """The worker's signature of its update, from the trailer (empty: unsigned or no update)."""
    stats: tuple[float, ...] = ()
    """A STATS result's numbers (``murmura.analytics.wire``); empty for every other kind."""
    wire_bytes: int = 0
    """Bytes of the update buffer as received (compressed or float32); 0 without an update."""


@dataclass(frozen=True, slots=True)
class DecodedInstruction:
    """An instruction from the coordinator after every check."""

    run_id: str
    round: int
    node: str
    kind: int
    config: dict[str, Scalar]
    weights: Vector | None
    layout: Layout | None
    base_sha256: bytes = b""
    """Set when ``weights`` is a delta against the model of this digest (a compressed
    downlink: ``murmura.node.downlink``); empty when they are the model."""


MAX_STATS = 400_002
"""Most numbers a STATS result may carry (``murmura.analytics.query.MAX_CELLS`` + 2)."""


def _check_metrics(metrics: dict[str, float]) -> dict[str, float]:
    if len(metrics) > MAX_METRICS:
        raise MalformedMessage(f"{len(metrics)} metrics (limit {MAX_METRICS})")
    return {str(k): float(v) for k, v in metrics.items()}


def error_text(exc: BaseException, limit: int = MAX_ERROR_CHARS) -> str:
    """What a worker reports of an exception: ``"Type: text"`` on one line, at most ``limit``.

    Only the exception's own text: no traceback (it would show the worker's file paths).
    """
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_error(h: pb.ResultHeader) -> None:
    """An error result is the header alone: bounded text, no update, no figures."""
    if len(h.error) > MAX_ERROR_CHARS:
        raise MalformedMessage(f"error text of {len(h.error)} characters (limit {MAX_ERROR_CHARS})")
    if h.HasField("update"):
        raise MalformedMessage("a result with an error must not announce an update")
    if h.num_examples or h.loss or h.metrics:
        raise MalformedMessage("a result with an error carries no examples, loss or metrics")


@dataclass(slots=True)
class ResultReader:
    """Reads one Push stream: a ``ResultHeader``, its update chunks, then the digest trailer."""

    max_bytes: int = codec.DEFAULT_MAX_BYTES
    expected: Layout | None = None
    header: pb.ResultHeader | None = None
    codec: Codec | None = None
    """The uplink codec agreed to (None: float32 updates only)."""
    _blob: BlobAssembler | None = field(default=None, init=False)
    _digest: bytes | None = field(default=None, init=False)
    _signature: bytes = field(default=b"", init=False)

    def read_header(self, raw: bytes) -> pb.ResultHeader:
        """Parse and check the first message; it must be a header."""
        part = codec.parse(pb.ResultPart, raw)
        if part.WhichOneof("part") != "header":
            raise MalformedMessage("a result stream must start with a header")
        h = part.header
        codec.check_version(h.version)
        codec.check_kind(h.kind)
        if h.kind not in (pb.FIT, pb.EVALUATE, pb.STATS):
            raise MalformedMessage(f"result of kind {pb.Kind.Name(h.kind)} is not allowed")
        if (h.kind == pb.STATS) != bool(h.stats) and not h.error:
            raise MalformedMessage("a STATS result needs its numbers; no other result has any")
        if len(h.stats) > MAX_STATS:
            raise MalformedMessage(f"{len(h.stats)} statistics (limit {MAX_STATS})")
        if h.error:
            _check_error(h)
            self.header = h
            return h
        if h.kind == pb.FIT:
            # An EVALUATE result's figures are checked once its binding is accepted
            # (murmura.validation.validate_evaluation), so a bad one is a failure of its round.
            if not math.isfinite(h.loss):
                raise MalformedMessage("loss is not finite")
            _check_metrics(dict(h.metrics))
        if (h.kind == pb.FIT) != h.HasField("update"):
            raise MalformedMessage("a FIT result needs an update; an EVALUATE result has none")
        if h.HasField("update"):  # refused before the binding is even looked at
            check_update_digest(h.update.digest_algorithm)
        self.header = h
        return h

    def start_blob(self) -> None:
        """Allocate the update buffer, after the caller accepted the header's binding."""
        if self.header is None:
            raise MalformedMessage("no header yet")
        if self.header.HasField("update"):
            self._blob = BlobAssembler(
                self.header.update, self.max_bytes, self.expected, True, self.codec
            )

    def read_chunk(self, raw: bytes) -> None:
        """Parse one message after the header: a chunk of the update, or the digest trailer."""
        if self._digest is not None:
            raise MalformedMessage("nothing may follow the digest trailer")
        fast = parse_chunk_frame(raw)
        if fast is not None and self._blob is not None:
            self._blob.add_bytes(*fast)
            return
        part = codec.parse(pb.ResultPart, raw)
        which = part.WhichOneof("part")
        if which not in ("chunk", "trailer"):
            raise MalformedMessage("only chunks and a trailer may follow the header")
        if self._blob is None:
            raise MalformedMessage(f"{which} for a result that announced no update")
        if which == "trailer":
            if len(part.trailer.signature) > MAX_SIGNATURE_BYTES:
                raise MalformedMessage(
                    f"a signature of {len(part.trailer.signature)} B "
                    f"(limit {MAX_SIGNATURE_BYTES} B)"
                )
            self._digest = bytes(part.trailer.digest)
            self._signature = bytes(part.trailer.signature)
        else:
            self._blob.add(part.chunk)

    def finish(self) -> DecodedResult:
        """Return the whole result, once the update is complete and its digest matches."""
        h = self.header
        if h is None:
            raise MalformedMessage("empty result stream")
        update = self._blob.finish(self._digest) if self._blob is not None else None
        digest = self._digest
        if digest is None:  # no update: the header is the whole result (duplicate vs replay)
            digest = update_digest(h.SerializeToString(deterministic=True))
        return DecodedResult(
            run_id=h.run_id,
            round=int(h.round),
            node=h.node,
            kind=int(h.kind),
            num_examples=int(h.num_examples),
            loss=float(h.loss),
            metrics={str(k): float(v) for k, v in h.metrics.items()},
            update=update,
            digest=digest,
            error=h.error,
            signature=self._signature,
            stats=tuple(h.stats),
            wire_bytes=int(h.update.length) if update is not None else 0,
        )


def decode_result(
    parts: Iterable[bytes],
    max_bytes: int = codec.DEFAULT_MAX_BYTES,
    expected: Layout | None = None,
    uplink: Codec | None = None,
) -> DecodedResult:
    """Decode a whole Push stream held in memory (tests, tools); ``uplink``: agreed codec."""
    reader = ResultReader(max_bytes, expected, codec=uplink)
    it = iter(parts)
    first = next(it, None)
    if first is None:
        raise MalformedMessage("empty result stream")
    reader.read_header(first)
    reader.start_blob()
    for raw in it:
        reader.read_chunk(raw)
    return reader.finish()


def decode_instruction(
    parts: Iterable[pb.Instruction | bytes],
    max_bytes: int = codec.DEFAULT_MAX_BYTES,
    downlink: Codec | None = None,
) -> DecodedInstruction:
    """Decode a Pull stream: one header, then the weight chunks it announced.

    Weights announced as a delta (``base_sha256``) must be in ``downlink``, the codec this
    node agreed to, and must come with a 32-byte base digest; the delta is returned decoded.
    """
    it = iter(parts)
    first = _instruction(next(it, None))
    if first.WhichOneof("part") != "header":
        raise MalformedMessage("an instruction stream must start with a header")
    h = first.header
    codec.check_version(h.version)
    codec.check_kind(h.kind)
    config = codec.config_from_proto(h.config)
    delta = bool(h.base_sha256)
    if delta and (downlink is None or len(h.base_sha256) != 32 or not h.HasField("weights")):
        raise MalformedMessage(
            "a model sent as a delta needs weights, a 32-byte base digest and a downlink "
            "codec this node agreed to"
        )
    agreed = downlink if delta else None
    blob = BlobAssembler(h.weights, max_bytes, codec=agreed) if h.HasField("weights") else None
    for item in it:
        fast = parse_chunk_frame(item) if isinstance(item, bytes) else None
        if fast is not None and blob is not None:
            blob.add_bytes(*fast)
            continue
        part = _instruction(item)
        if part.WhichOneof("part") != "chunk" or blob is None:
            raise MalformedMessage("unexpected message after the instruction header")
        blob.add(part.chunk)
    if h.kind in (pb.FIT, pb.EVALUATE) and blob is None:
        raise MalformedMessage(f"{pb.Kind.Name(h.kind)} instruction without weights")
    weights = blob.finish() if blob is not None else None
    layout = blob.layout if blob is not None else None
    return DecodedInstruction(
        h.run_id, int(h.round), h.node, int(h.kind), config, weights, layout, bytes(h.base_sha256)
    )


def _instruction(item: pb.Instruction | bytes | None) -> pb.Instruction:
    if item is None:
        raise MalformedMessage("empty instruction stream")
    if isinstance(item, pb.Instruction):
        return item
    return codec.parse(pb.Instruction, item)


def result_parts(
    header: pb.ResultHeader,
    blob: codec.Blob | None,
    chunk_size: int = codec.DEFAULT_CHUNK,
    sign: Sign | None = None,
) -> Iterator[pb.ResultPart]:
    """Yield a Push stream: the header (blob header without digest), the chunks, the trailer.

    With ``sign``, the trailer also carries the signature it makes from the digest.
    """
    _announce(header, blob)
    yield pb.ResultPart(header=header)
    if blob is not None:
        hasher = update_hasher()
        for chunk in blob.chunks(chunk_size):
            hasher.update(chunk.data)
            yield pb.ResultPart(chunk=chunk)
        yield pb.ResultPart(trailer=_trailer(hasher.digest(), sign))


def instruction_parts(
    header: pb.InstructionHeader, blob: codec.Blob | None, chunk_size: int = codec.DEFAULT_CHUNK
) -> Iterator[pb.Instruction]:
    """Yield a Pull stream: the header (with the blob header inside), then the chunks."""
    if blob is not None:
        header.weights.CopyFrom(blob.header)
    yield pb.Instruction(header=header)
    if blob is not None:
        for chunk in blob.chunks(chunk_size):
            yield pb.Instruction(chunk=chunk)


def result_frames(
    header: pb.ResultHeader,
    blob: codec.Blob | None,
    chunk_size: int = codec.DEFAULT_CHUNK,
    sign: Sign | None = None,
) -> Iterator[bytes]:
    """Yield a serialized Push stream; chunks take the one-copy fast path, hashed on the way out.

    With ``sign``, the trailer also carries the signature it makes from the digest.
    """
    _announce(header, blob)
    yield bytes(pb.ResultPart(header=header).SerializeToString())
    if blob is not None:
        hasher = update_hasher()
        yield from blob.frames(chunk_size, hasher)
        trailer = pb.ResultPart(trailer=_trailer(hasher.digest(), sign))
        yield bytes(trailer.SerializeToString())


def _trailer(digest: bytes, sign: Sign | None) -> pb.BlobTrailer:
    return pb.BlobTrailer(digest=digest, signature=sign(digest) if sign is not None else b"")


def _announce(header: pb.ResultHeader, blob: codec.Blob | None) -> None:
    """Put the blob header in a result header, naming the digest that follows in the trailer."""
    if blob is not None:
        header.update.CopyFrom(blob.header)
        header.update.sha256 = b""
        header.update.digest_algorithm = UPDATE_DIGEST


def instruction_frames(
    header: pb.InstructionHeader, blob: codec.Blob | None, chunk_size: int = codec.DEFAULT_CHUNK
) -> Iterator[bytes]:
    """Yield a serialized Pull stream; chunks take the one-copy fast path."""
    if blob is not None:
        header.weights.CopyFrom(blob.header)
    yield bytes(pb.Instruction(header=header).SerializeToString())
    if blob is not None:
        yield from blob.frames(chunk_size)
