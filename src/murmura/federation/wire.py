"""The federation's messages: small JSON objects over gRPC, read with a size limit.

Service ``murmura.v1.Federation`` carries only configuration and status (a job is TOML
text, an answer a reason), never a model update, so its messages are JSON documents rather
than protobuf: a request that is not a JSON object, is over ``MAX_REQUEST_BYTES`` or lacks
a field is refused as INVALID_ARGUMENT. A download streams files in base64 chunks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from murmura.errors import ProtocolError

SERVICE = "murmura.v1.Federation"
VERSION = 1
MAX_REQUEST_BYTES = 512 * 1024
ADMIN_METHODS = ("Submit", "List", "Status", "Abort", "Logs", "Download")
SITE_METHODS = ("Offer", "Answer")


def encode(msg: Mapping[str, Any]) -> bytes:
    """A message as bytes (with the protocol version)."""
    return json.dumps({"version": VERSION, **msg}, separators=(",", ":")).encode()


def decode(raw: bytes) -> dict[str, Any]:
    """A message from bytes; ``ProtocolError`` for anything but a JSON object of this version."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise ProtocolError(f"message of {len(raw)} bytes, over {MAX_REQUEST_BYTES}")
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("not a JSON object")
    if msg.get("version") != VERSION:
        raise ProtocolError(f"protocol version {msg.get('version')!r}, expected {VERSION}")
    return msg


def text(msg: Mapping[str, Any], key: str, limit: int = 4096) -> str:
    """Field ``key`` of ``msg``: a string of at most ``limit`` characters."""
    value = msg.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"field {key!r} must be a string of at most {limit} characters")
    return value
