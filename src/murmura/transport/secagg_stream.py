"""Secure aggregation answers larger than one gRPC message: the ``SendStream`` wire form.

A stream is one ``SecAggStreamHeader`` (the answer's binding to run, round, node and step,
its total length and SHA-256), then the payload in chunks, the same ``Chunk`` frames as the
FIT streams (``frames.py``). ``SendStreamReader`` takes raw bytes one message at a time and
raises only ``ProtocolError`` subclasses. The caller checks the header's binding before
``start``, which checks the declared length against the limit before allocating
(``codec.BufferAssembler``), so nothing is allocated for an answer that will be refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from murmura.transport import codec
from murmura.transport.codec import BufferAssembler, MalformedMessage, UnknownKind
from murmura.transport.frames import chunk_frame, parse_chunk_frame
from murmura.transport.proto import secagg_pb2 as spb

_STEPS = frozenset(v for v in spb.SecAggStep.values() if v != spb.SECAGG_STEP_UNSPECIFIED)


@dataclass(frozen=True, slots=True)
class StreamedAnswer:
    """A node's answer for a step after every check: binding, length and digest."""

    run_id: str
    round: int
    node: str
    step: int
    payload: bytes
    digest: bytes


def check_step(step: int) -> int:
    """Refuse a step outside the ``SecAggStep`` enum (or the unspecified zero)."""
    if step not in _STEPS:
        raise UnknownKind(f"unknown secure aggregation step {step}")
    return step


@dataclass(slots=True)
class SendStreamReader:
    """Reads one SendStream: a ``SecAggStreamHeader``, then the chunks of its payload."""

    header: spb.SecAggStreamHeader | None = None
    _buf: BufferAssembler | None = field(default=None, init=False)

    def read_header(self, raw: bytes) -> spb.SecAggStreamHeader:
        """Parse and check the first message; it must be a header."""
        part = codec.parse(spb.SecAggSendPart, raw)
        if part.WhichOneof("part") != "header":
            raise MalformedMessage("a secagg send stream must start with a header")
        h = part.header
        codec.check_version(h.version)
        check_step(h.step)
        if h.length == 0:
            raise MalformedMessage("a secagg send stream announced an empty answer")
        if len(h.sha256) != 32:
            raise MalformedMessage("the header's sha256 digest must be 32 bytes")
        self.header = h
        return h

    def start(self, max_bytes: int) -> None:
        """Allocate the payload, after the caller accepted the header's binding.

        Raises ``SizeLimitExceeded`` before allocating when the length is over ``max_bytes``.
        """
        if self.header is None:
            raise MalformedMessage("no header yet")
        self._buf = BufferAssembler(int(self.header.length), max_bytes)

    def read_chunk(self, raw: bytes) -> None:
        """Parse one message after the header: it must be the next chunk of the payload."""
        if self._buf is None:
            raise MalformedMessage("chunk before the stream was started")
        fast = parse_chunk_frame(raw)
        if fast is not None:
            self._buf.add_bytes(*fast)
            return
        part = codec.parse(spb.SecAggSendPart, raw)
        if part.WhichOneof("part") != "chunk":
            raise MalformedMessage("only chunks may follow the header")
        self._buf.add_bytes(int(part.chunk.offset), part.chunk.data)

    def finish(self) -> StreamedAnswer:
        """Return the answer, once the payload is complete and its digest matches."""
        h = self.header
        if h is None or self._buf is None:
            raise MalformedMessage("empty secagg send stream")
        payload = bytes(self._buf.finish(bytes(h.sha256)))
        return StreamedAnswer(h.run_id, int(h.round), h.node, int(h.step), payload, bytes(h.sha256))


def decode_send_stream(parts: Iterable[bytes], max_bytes: int) -> StreamedAnswer:
    """Decode a whole SendStream held in memory (tests, tools); no binding check."""
    reader = SendStreamReader()
    it = iter(parts)
    first = next(it, None)
    if first is None:
        raise MalformedMessage("empty secagg send stream")
    reader.read_header(first)
    reader.start(max_bytes)
    for raw in it:
        reader.read_chunk(raw)
    return reader.finish()


def stream_header(
    run_id: str, round_: int, node: str, step: spb.SecAggStep, payload: bytes
) -> spb.SecAggStreamHeader:
    """The header that binds ``payload`` to (run, round, node, step), with length and digest."""
    return spb.SecAggStreamHeader(
        version=codec.PROTOCOL_VERSION, run_id=run_id, round=round_, node=node, step=step,
        length=len(payload), sha256=hashlib.sha256(payload).digest(),
    )  # fmt: skip


def send_frames(
    header: spb.SecAggStreamHeader, payload: bytes, chunk_size: int = codec.DEFAULT_CHUNK
) -> Iterator[bytes]:
    """Yield a serialized SendStream: the header, then one-copy chunk frames of ``payload``."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    if header.length != len(payload):
        raise ValueError(f"header announces {header.length} B, payload has {len(payload)} B")
    yield bytes(spb.SecAggSendPart(header=header).SerializeToString())
    view = memoryview(payload)
    for off in range(0, len(view), chunk_size):
        yield chunk_frame(off, view[off : off + chunk_size])
