"""The transports by name: ``[server] transport`` picks one for the coordinator and its workers.

``"grpc"`` (``murmura.transport.grpc_transport``) is the only production entry; a new
transport is one module implementing ``murmura.transport.base.Transport`` and one
``register_lazy`` line here. A transport carries secure aggregation, a compressed downlink
or the asynchronous coordinator only if its ``features`` say so; a coordinator refuses them
over any other (``refuse_missing``), naming the setting.
"""

from __future__ import annotations

from collections.abc import Iterable

from murmura.errors import ConfigError, RegistryError
from murmura.registry import Registry
from murmura.transport.base import ASYNC, DOWNLINK, SECAGG, Transport

DEFAULT = "grpc"
TRANSPORTS: Registry[Transport] = Registry("transport")
TRANSPORTS.register_lazy(
    DEFAULT, "murmura.transport.grpc_transport:GRPC", "gRPC over TLS with node certificates"
)

SETTINGS = {
    SECAGG: "[secagg] enabled",
    DOWNLINK: "[compression] downlink",
    ASYNC: "[clock] mode = 'async'",
}
"""The setting that needs each transport feature, as a refusal names it."""


def transport(name: str) -> Transport:
    """The transport called ``name``; a ``ConfigError`` naming ``[server] transport`` if none."""
    try:
        return TRANSPORTS.get(name)
    except RegistryError as exc:
        raise ConfigError(f"[server] transport: {exc}") from None


def refuse_missing(name: str, needs: Iterable[str]) -> Transport:
    """Transport ``name``, or a ``ConfigError`` naming a setting in ``needs`` it cannot carry."""
    found = transport(name)
    for feature in sorted(set(needs) - found.features):
        raise ConfigError(
            f"{SETTINGS[feature]} needs a transport that carries it; "
            f"[server] transport = {name!r} does not"
        )
    return found
