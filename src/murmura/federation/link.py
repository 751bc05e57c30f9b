"""A node's link to the federation's coordinator: an admin's (``murmura job``) or a site's.

Over TLS it first checks that the node it dials holds a coordinator certificate
(``dial_check``), then calls the ``murmura.v1.Federation`` service with a deadline on every
call. A refusal (PERMISSION_DENIED, INVALID_ARGUMENT, NOT_FOUND...) becomes a
``FederationError`` carrying the coordinator's reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import grpc

from murmura.errors import MurmuraError, ProtocolError
from murmura.federation import wire
from murmura.transport import dial_check, keys
from murmura.transport.grpc_client import LinkOptions, channel_options
from murmura.transport.grpc_server import NODE_HEADER, is_loopback


class FederationError(MurmuraError):
    """The federation's coordinator refused a call (its status code and reason)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


class FederationLink:
    """Calls to the federation service at ``target`` as the holder of ``credentials``."""

    def __init__(
        self,
        target: str,
        credentials: keys.Credentials | None,
        node: str = "",
        timeout_s: float = 10.0,
    ) -> None:
        self.target, self.timeout_s = target, timeout_s
        self._metadata: tuple[tuple[str, str], ...] = ()
        opts = LinkOptions(call_timeout_s=timeout_s)
        if credentials is None:
            if not is_loopback(target.rsplit(":", 1)[0]):
                raise MurmuraError(f"refusing an insecure link to {target}: TLS is required")
            self._metadata = ((NODE_HEADER, node),)
            self.channel = grpc.insecure_channel(target, channel_options(opts))
            return
        parent = dial_check.parent_identity(target, credentials, ("coordinator",), None, timeout_s)
        opts = dataclasses.replace(opts, server_name=parent.name)
        tls = grpc.ssl_channel_credentials(credentials.ca, credentials.key, credentials.cert)
        self.channel = grpc.secure_channel(target, tls, channel_options(opts))

    def call(
        self, method: str, msg: Mapping[str, Any], timeout_s: float | None = None
    ) -> dict[str, Any]:
        """One unary call; the reply as a dict."""
        stub = self.channel.unary_unary(f"/{wire.SERVICE}/{method}")
        try:
            raw = stub(
                wire.encode(msg), timeout=timeout_s or self.timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return _reply(raw)

    def stream(
        self, method: str, msg: Mapping[str, Any], timeout_s: float
    ) -> Iterator[dict[str, Any]]:
        """A server-streaming call; each reply as a dict."""
        stub = self.channel.unary_stream(f"/{wire.SERVICE}/{method}")
        try:
            for raw in stub(wire.encode(msg), timeout=timeout_s, metadata=self._metadata):
                yield _reply(raw)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()


def _reply(raw: bytes) -> dict[str, Any]:
    try:
        return wire.decode(raw)
    except ProtocolError as exc:
        raise FederationError("INVALID_REPLY", str(exc)) from None


def _error(exc: grpc.RpcError) -> FederationError:
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return FederationError(code.name, str(details))
