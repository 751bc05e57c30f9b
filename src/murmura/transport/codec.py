"""Wire codec: raw little-endian float32 buffers in checked chunks, and safe message parsing.

Everything that reads bytes from the network goes through here and raises only subclasses of
``ProtocolError``. Sizes are checked against the announced layout and the size limit *before*
any buffer is allocated; the digest is checked before a buffer is handed out. A model's
SHA-256 travels in its header; an update's digest (BLAKE3, named in its header:
``murmura.transport.digests``) in a trailer after its chunks, so a worker hashes while it
sends (``BlobAssembler(trailer_digest=True)``). ``BufferAssembler`` makes the
same checks on opaque bytes (the chunked answers of secure aggregation).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar, cast

import numpy as np
from google.protobuf.message import DecodeError, Message

from murmura.compress.base import Codec
from murmura.compress.base import spec as codec_spec
from murmura.compress.frame import framed_size, unframe
from murmura.errors import ProtocolError
from murmura.transport.digests import Hasher, check_update_digest, update_hasher
from murmura.transport.frames import chunk_frame
from murmura.transport.proto import murmura_pb2 as pb
from murmura.types import Layout, Scalar, Vector

PROTOCOL_VERSION = 2
DTYPE = "<f4"
DEFAULT_CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 2 << 30
MAX_TENSORS = 100_000
MAX_RANK = 16

M = TypeVar("M", bound=Message)


class MalformedMessage(ProtocolError):
    """Bytes that are not a valid message of the expected type, or a message out of order."""


class UnsupportedVersion(ProtocolError):
    """A message of a protocol version this node does not speak."""


class UnknownKind(ProtocolError):
    """A message kind this node does not know."""


class LengthMismatch(ProtocolError):
    """A declared length that disagrees with the layout or with the bytes that arrived."""


class SizeLimitExceeded(ProtocolError):
    """A declared or actual size above the configured limit."""


class DigestMismatch(ProtocolError):
    """The digest of the received buffer differs from the announced one."""


class LayoutMismatch(ProtocolError):
    """A buffer announced with a layout other than the one expected."""


def parse(cls: type[M], data: bytes) -> M:
    """Parse ``data`` as a ``cls`` message; any decoding failure becomes ``MalformedMessage``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"expected bytes for {cls.__name__}, got {type(data).__name__}")
    msg = cast(M, cls())
    try:
        msg.ParseFromString(bytes(data))
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"cannot decode {cls.__name__}: {exc}") from None
    return msg


def check_version(version: int) -> None:
    """Refuse any protocol version but ours."""
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(
            f"protocol version {version} (this node speaks {PROTOCOL_VERSION})"
        )


def check_kind(kind: int) -> int:
    """Refuse a kind outside the enum (or the unspecified zero)."""
    if kind not in (pb.FIT, pb.EVALUATE, pb.WAIT, pb.SHUTDOWN, pb.STATS):
        raise UnknownKind(f"unknown message kind {kind}")
    return kind


def layout_to_proto(layout: Layout) -> list[pb.TensorSpec]:
    """Return the layout as a list of ``TensorSpec`` messages."""
    return [
        pb.TensorSpec(name=n, shape=list(s))
        for n, s in zip(layout.names, layout.shapes, strict=True)
    ]


def layout_from_proto(specs: object) -> Layout:
    """Rebuild a ``Layout``; refuses negative dims, huge ranks and duplicate names."""
    items = list(specs)  # type: ignore[call-overload]
    if len(items) > MAX_TENSORS:
        raise MalformedMessage(f"layout has {len(items)} tensors (limit {MAX_TENSORS})")
    names: list[str] = []
    shapes: list[tuple[int, ...]] = []
    for spec in items:
        shape = tuple(int(d) for d in spec.shape)
        if len(shape) > MAX_RANK or any(d < 0 for d in shape):
            raise MalformedMessage(f"tensor {spec.name!r} has an invalid shape {shape}")
        names.append(str(spec.name))
        shapes.append(shape)
    try:
        return Layout(tuple(names), tuple(shapes))
    except ValueError as exc:
        raise MalformedMessage(f"invalid layout: {exc}") from None


def layout_bytes(layout: Layout) -> int:
    """Bytes a float32 vector of this layout takes, with Python ints (no overflow)."""
    total = 0
    for shape in layout.shapes:
        n = 1
        for d in shape:
            n *= d
        total += n
    return 4 * total


@dataclass(frozen=True, slots=True)
class Blob:
    """A float32 vector ready to send: its header and its little-endian bytes."""

    header: pb.BlobHeader
    data: memoryview

    def chunks(self, chunk_size: int = DEFAULT_CHUNK) -> Iterator[pb.Chunk]:
        """Yield the buffer as in-order chunks of at most ``chunk_size`` bytes."""
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        for off in range(0, len(self.data), chunk_size):
            yield pb.Chunk(offset=off, data=bytes(self.data[off : off + chunk_size]))

    def frames(
        self, chunk_size: int = DEFAULT_CHUNK, hasher: Hasher | None = None
    ) -> Iterator[bytes]:
        """Yield serialized chunk messages (``ResultPart``/``Instruction``), one copy each.

        With ``hasher``, each chunk is also hashed as it goes out (the trailer's digest), from
        the frame's copy while it is still in cache rather than from the vector again.
        """
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        for off in range(0, len(self.data), chunk_size):
            piece = self.data[off : off + chunk_size]
            frame = chunk_frame(off, piece)
            if hasher is not None:
                hasher.update(memoryview(frame)[len(frame) - len(piece) :])  # releases the GIL
            yield frame


def encode_blob(vector: Vector, layout: Layout, digest: bool = True) -> Blob:
    """Describe ``vector`` (float32, shaped as ``layout``) for sending; no copy if contiguous LE.

    ``digest=False`` leaves the header's SHA-256 empty, for a stream that ends with a trailer.
    """
    arr = np.ascontiguousarray(vector, dtype=DTYPE)
    if arr.shape != (layout.size,):
        raise ValueError(f"vector has shape {arr.shape}, layout needs ({layout.size},)")
    data = memoryview(arr.data).cast("B")
    header = pb.BlobHeader(
        dtype=DTYPE,
        length=len(data),
        sha256=hashlib.sha256(data).digest() if digest else b"",
        layout=layout_to_proto(layout),
    )
    return Blob(header, data)


def compressed_blob(wire: bytes, codec_spec: str, layout: Layout) -> Blob:
    """Describe a codec's framed bytes (``murmura.compress.frame``) for sending.

    The header's ``dtype`` names the codec's spec instead of ``"<f4"``; its digest follows in
    the trailer.
    """
    header = pb.BlobHeader(dtype=codec_spec, length=len(wire), layout=layout_to_proto(layout))
    return Blob(header, memoryview(wire))


@dataclass(slots=True)
class BufferAssembler:
    """Fills a buffer of a declared length from in-order chunks, hashing them as they come.

    The length is checked against ``max_bytes`` before anything is allocated; each chunk is
    written straight into the buffer and must start where the previous one ended and end
    within the length; ``finish`` returns the bytes only once they are complete and their
    digest (SHA-256, or with ``update_digest`` the update's, BLAKE3) equals the announced one.
    """

    length: int
    max_bytes: int = DEFAULT_MAX_BYTES
    update_digest: bool = False
    _buf: memoryview = field(init=False)
    _filled: int = field(init=False, default=0)
    _hash: Hasher = field(init=False)

    def __post_init__(self) -> None:
        if self.length > self.max_bytes:
            raise SizeLimitExceeded(
                f"declared length {self.length} B exceeds the limit {self.max_bytes} B"
            )
        # np.empty, not bytearray: no zero-fill pass; every byte is written before use.
        self._buf = memoryview(np.empty(self.length, dtype=np.uint8).data).cast("B")
        self._hash = update_hasher() if self.update_digest else hashlib.sha256()

    def add_bytes(self, offset: int, data: bytes | memoryview) -> None:
        """Append ``data`` found at ``offset``: contiguous, non-empty, within the length."""
        n = len(data)
        if offset != self._filled:
            raise MalformedMessage(f"chunk at offset {offset}, expected {self._filled}")
        if n == 0:
            raise MalformedMessage("empty chunk")
        if self._filled + n > len(self._buf):
            raise LengthMismatch(
                f"chunk ends at {self._filled + n} B, beyond the declared length {len(self._buf)} B"
            )
        self._buf[self._filled : self._filled + n] = data
        self._hash.update(data)
        self._filled += n

    def check_complete(self) -> None:
        """Refuse a stream that ended before the declared length."""
        if self._filled != len(self._buf):
            raise LengthMismatch(f"stream ended after {self._filled} of {len(self._buf)} B")

    def finish(self, digest: bytes) -> memoryview:
        """The whole buffer, once it is complete and its digest equals ``digest``."""
        self.check_complete()
        name = "blake3" if self.update_digest else "sha256"
        if len(digest) != 32:
            raise MalformedMessage(f"{name} digest must be 32 bytes")
        if self._hash.digest() != digest:
            raise DigestMismatch(f"{name} of the received buffer differs from the announced digest")
        return self._buf


@dataclass(slots=True)
class BlobAssembler:
    """Receives the chunks a ``BlobHeader`` announced, checking every claim before trusting it.

    With ``trailer_digest`` (a Push) the header carries no digest but names its algorithm, which
    must be ``murmura.transport.digests.UPDATE_DIGEST``; ``finish`` gets it from the trailer.
    """

    header: pb.BlobHeader
    max_bytes: int = DEFAULT_MAX_BYTES
    expected: Layout | None = None
    trailer_digest: bool = False
    codec: Codec | None = None
    """The codec this node agreed to for these buffers (None: raw float32 only)."""
    layout: Layout = field(init=False)
    _bytes: BufferAssembler = field(init=False)

    def __post_init__(self) -> None:
        h = self.header
        agreed = DTYPE if self.codec is None else codec_spec(self.codec)
        if h.dtype != agreed:
            raise MalformedMessage(f"dtype {h.dtype!r}: this node agreed to {agreed!r} only")
        if h.length > self.max_bytes:
            raise SizeLimitExceeded(
                f"declared length {h.length} B exceeds the limit {self.max_bytes} B"
            )
        if len(h.sha256) != (0 if self.trailer_digest else 32):
            where = "empty (it follows in the trailer)" if self.trailer_digest else "32 bytes"
            raise MalformedMessage(f"the header's sha256 digest must be {where}")
        if self.trailer_digest:
            check_update_digest(h.digest_algorithm)
        elif h.digest_algorithm:
            raise MalformedMessage("a model's header names no digest algorithm (it is SHA-256)")
        self.layout = layout_from_proto(h.layout)
        if self.expected is not None and self.layout != self.expected:
            raise LayoutMismatch("buffer layout differs from the model's layout")
        need = (
            layout_bytes(self.layout)
            if self.codec is None
            else framed_size(self.codec, self.layout.size)
        )
        if need != h.length:
            raise LengthMismatch(f"declared length {h.length} B, layout needs {need} B")
        # Only now, with every claim consistent and under the limit, allocate.
        self._bytes = BufferAssembler(h.length, self.max_bytes, self.trailer_digest)

    def add(self, chunk: pb.Chunk) -> None:
        """Append one chunk; it must start where the previous one ended and fit the length."""
        self._bytes.add_bytes(int(chunk.offset), chunk.data)

    def add_bytes(self, offset: int, data: bytes | memoryview) -> None:
        """Append ``data`` found at ``offset``, with the same checks as ``add``."""
        self._bytes.add_bytes(offset, data)

    def finish(self, digest: bytes | None = None) -> Vector:
        """Return the received vector, once it is complete and its digest matches.

        ``digest`` is the trailer's, required with ``trailer_digest`` and refused without.
        """
        self._bytes.check_complete()
        if (digest is not None) != self.trailer_digest:
            need = "is required" if self.trailer_digest else "is not allowed here"
            raise MalformedMessage(f"a digest trailer {need}")
        buf = self._bytes.finish(digest if digest is not None else bytes(self.header.sha256))
        if self.codec is not None:  # the frame names the codec again; decode refuses bad bytes
            return unframe(self.codec, bytes(buf), self.layout.size)
        return np.frombuffer(buf, dtype=DTYPE).astype(np.float32, copy=False)


def config_to_proto(config: Mapping[str, Scalar]) -> dict[str, pb.ConfigValue]:
    """Scalar config values as ``ConfigValue`` messages."""
    out: dict[str, pb.ConfigValue] = {}
    for key, value in config.items():
        if isinstance(value, bool):
            out[key] = pb.ConfigValue(b=value)
        elif isinstance(value, int):
            out[key] = pb.ConfigValue(i=value)
        elif isinstance(value, float):
            out[key] = pb.ConfigValue(f=value)
        elif isinstance(value, str):
            out[key] = pb.ConfigValue(s=value)
        else:
            raise ValueError(f"config value {key!r} has unsupported type {type(value).__name__}")
    return out


def config_from_proto(config: Mapping[str, pb.ConfigValue]) -> dict[str, Scalar]:
    """Decode ``ConfigValue`` messages; an empty one is malformed."""
    out: dict[str, Scalar] = {}
    for key, value in config.items():
        which = value.WhichOneof("value")
        if which is None:
            raise MalformedMessage(f"config value {key!r} is empty")
        out[key] = getattr(value, which)
    return out
