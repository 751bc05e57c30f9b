"""The messages of SecAgg+, as plain dataclasses of ints and bytes, and their wire codec.

Each stage of Bonawitz et al. 2017 / Bell et al. 2020 is one request from the server and one
reply from each client; stage 2 is split in two (share receipt, then masked input) so that a
ciphertext that fails authentication excludes its sender *before* anyone masks with it. The
codec is a small length-prefixed little-endian format derived from the dataclass fields, so
the same messages can travel in gRPC ``bytes`` fields; there is no pickle anywhere.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from typing import Any, TypeVar, get_args, get_type_hints

from murmura.errors import ProtocolError

WIRE_VERSION = 1
_INT = struct.Struct("<q")
_LEN = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class AdvertiseKeys:
    """Stage 0, client -> server: the two X25519 public keys, signed with the identity key."""

    client: int
    enc_public: bytes
    mask_public: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class KeyDirectory:
    """Stage 1, server -> client: the advertised keys of the receiver's neighbours."""

    receiver: int
    keys: tuple[AdvertiseKeys, ...]


@dataclass(frozen=True, slots=True)
class EncryptedShares:
    """One AES-GCM ciphertext of a share bundle (seed share and key share), sender to receiver."""

    sender: int
    receiver: int
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class ShareKeys:
    """Stage 1, client -> server: encrypted share bundles, and neighbours whose keys failed."""

    client: int
    shares: tuple[EncryptedShares, ...]
    rejected: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ShareDelivery:
    """Stage 2a, server -> client: the share bundles addressed to the receiver."""

    receiver: int
    shares: tuple[EncryptedShares, ...]


@dataclass(frozen=True, slots=True)
class ShareReceipt:
    """Stage 2a, client -> server: senders whose bundles failed authentication."""

    client: int
    rejected: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MaskRequest:
    """Stage 2b, server -> client: the neighbours to mask with (both bundles accepted)."""

    receiver: int
    active: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MaskedInput:
    """Stage 2b, client -> server: the masked vector, little-endian uint32 words."""

    client: int
    masked: bytes


@dataclass(frozen=True, slots=True)
class UnmaskRequest:
    """Stage 3, server -> client: which of its neighbours survived and which dropped."""

    receiver: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RevealedShare:
    """One Shamir share handed to the server: of ``owner``'s seed or of its mask key."""

    owner: int
    index: int
    share: bytes


@dataclass(frozen=True, slots=True)
class UnmaskResponse:
    """Stage 3, client -> server: seed shares of survivors, key shares of dropped neighbours."""

    client: int
    seed_shares: tuple[RevealedShare, ...]
    key_shares: tuple[RevealedShare, ...]


Message = (
    AdvertiseKeys
    | KeyDirectory
    | EncryptedShares
    | ShareKeys
    | ShareDelivery
    | ShareReceipt
    | MaskRequest
    | MaskedInput
    | UnmaskRequest
    | RevealedShare
    | UnmaskResponse
)
ClientMessage = AdvertiseKeys | ShareKeys | ShareReceipt | MaskedInput | UnmaskResponse
_TYPES: tuple[type[Any], ...] = (
    AdvertiseKeys, KeyDirectory, EncryptedShares, ShareKeys, ShareDelivery, ShareReceipt,
    MaskRequest, MaskedInput, UnmaskRequest, RevealedShare, UnmaskResponse,
)  # fmt: skip
_TAG = {cls: tag for tag, cls in enumerate(_TYPES)}
M = TypeVar("M", bound=Message)


def _schema(cls: type[Any]) -> tuple[tuple[str, Any], ...]:
    """Field names with their kind: ``int``, ``bytes``, ``"ints"`` or a nested message class."""
    hints = get_type_hints(cls)
    out: list[tuple[str, Any]] = []
    for f in fields(cls):
        hint = hints[f.name]
        if hint in (int, bytes):
            out.append((f.name, hint))
        else:
            item = get_args(hint)[0]
            out.append((f.name, "ints" if item is int else item))
    return tuple(out)


_SCHEMAS = {cls: _schema(cls) for cls in _TYPES}


def _put(msg: Any, parts: list[bytes]) -> None:
    for name, kind in _SCHEMAS[type(msg)]:
        value = getattr(msg, name)
        if kind is int:
            parts.append(_INT.pack(value))
        elif kind is bytes:
            parts += [_LEN.pack(len(value)), value]
        elif kind == "ints":
            parts += [_LEN.pack(len(value)), struct.pack(f"<{len(value)}q", *value)]
        else:
            parts.append(_LEN.pack(len(value)))
            for item in value:
                _put(item, parts)


def encode(msg: Message) -> bytes:
    """Serialise a message: version byte, type tag, then its fields length-prefixed."""
    parts = [bytes([WIRE_VERSION, _TAG[type(msg)]])]
    _put(msg, parts)
    return b"".join(parts)


class _Reader:
    """Cursor over received bytes that raises ``ProtocolError`` instead of reading past the end."""

    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)
        self.pos = 0

    def take(self, size: int) -> memoryview:
        if size < 0 or self.pos + size > len(self.view):
            raise ProtocolError("secagg message truncated")
        chunk = self.view[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def length(self) -> int:
        return int(_LEN.unpack(self.take(_LEN.size))[0])


def _get(cls: type[Any], reader: _Reader) -> Any:
    values: dict[str, Any] = {}
    for name, kind in _SCHEMAS[cls]:
        if kind is int:
            values[name] = _INT.unpack(reader.take(_INT.size))[0]
        elif kind is bytes:
            values[name] = bytes(reader.take(reader.length()))
        elif kind == "ints":
            count = reader.length()
            values[name] = struct.unpack(f"<{count}q", reader.take(8 * count))
        else:
            values[name] = tuple(_get(kind, reader) for _ in range(reader.length()))
    return cls(**values)


def decode(data: bytes) -> Message:
    """Parse bytes made by :func:`encode`; raises ``ProtocolError`` on anything malformed."""
    if len(data) < 2 or data[0] != WIRE_VERSION:
        raise ProtocolError(f"not a secagg v{WIRE_VERSION} message")
    if data[1] >= len(_TYPES):
        raise ProtocolError(f"unknown secagg message tag {data[1]}")
    reader = _Reader(data)
    reader.take(2)
    msg: Message = _get(_TYPES[data[1]], reader)
    if reader.pos != len(data):
        raise ProtocolError("secagg message has trailing bytes")
    return msg


def decode_as(data: bytes, kind: type[M]) -> M:
    """Parse bytes that must hold a message of type ``kind``."""
    msg = decode(data)
    if not isinstance(msg, kind):
        raise ProtocolError(f"expected a {kind.__name__}, got a {type(msg).__name__}")
    return msg


def masked_input_size(length: int, word_bytes: int) -> int:
    """Bytes of an encoded :class:`MaskedInput` of ``length`` words of ``word_bytes`` each.

    The update's cost on the wire in a secure round, counted alike in simulation and over gRPC.
    """
    return len(encode(MaskedInput(0, b""))) + length * word_bytes
