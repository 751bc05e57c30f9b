"""Who is at the address we dial: the role and name in its CA-verified certificate.

gRPC checks the server's certificate against the CA and the address, but every node
certificate answers to 127.0.0.1 and ``localhost``, and gRPC knows nothing of roles, so a
worker certificate could pose as a coordinator. Before a worker (or an edge) uses its link,
``parent_identity`` does one mutual-TLS handshake with ``ssl`` against the project CA, reads
the certificate the other end presented and refuses unless its role may act as a parent
(``keys.PARENT_ROLES``); a peer checks that a neighbour holds a worker certificate with the
neighbour's name (``neighbour_identity``). The caller then pins its gRPC channel to the
verified name (``grpc.ssl_target_name_override``), so every later reconnection must present a
certificate that carries that name, which ``murmura keys issue`` gives no other node.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from murmura.errors import IdentityError, MurmuraError
from murmura.transport import keys


class Unreachable(MurmuraError):
    """Nothing answered a TLS handshake at the address (yet): worth retrying."""


@dataclass(frozen=True, slots=True)
class Identity:
    """The name (common name) and role (OU) of the certificate at ``target``."""

    target: str
    name: str
    role: str


@contextlib.contextmanager
def _pem_files(creds: keys.Credentials) -> Iterator[tuple[str, str]]:
    """Our chain and key as paths ``ssl`` can load, never written to a disk (memfd on Linux)."""
    if hasattr(os, "memfd_create"):
        fds = [os.memfd_create(n) for n in ("cert", "key")]
        try:
            for fd, data in zip(fds, (creds.cert, creds.key), strict=True):
                os.write(fd, data)
            yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory() as tmp:  # mode 0700
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_bytes(creds.cert)
        key.touch(0o600)
        key.write_bytes(creds.key)
        yield str(cert), str(key)


def _context(creds: keys.Credentials) -> ssl.SSLContext:
    """A client context that trusts the project CA only and presents our certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # every node certificate names 127.0.0.1: the role decides
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=creds.ca.decode("ascii"))
    with _pem_files(creds) as (cert, key):
        ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def peer_identity(target: str, creds: keys.Credentials, timeout_s: float = 10.0) -> Identity:
    """Handshake with ``target`` (HOST:PORT) and return its CA-verified identity.

    Raises ``IdentityError`` for a certificate the CA did not issue, ``Unreachable`` when no
    handshake completes (refused, timed out, closed).
    """
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise IdentityError(f"cannot dial {target!r}: expected HOST:PORT")
    ctx = _context(creds)
    try:
        with (
            socket.create_connection((host, int(port)), timeout=timeout_s) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as exc:
        raise IdentityError(
            f"the node at {target} presents a certificate the project CA did not issue "
            f"({exc.verify_message})"
        ) from None
    except OSError as exc:  # refused, reset, timed out, or a TLS alert from the other end
        raise Unreachable(f"no TLS handshake with {target}: {exc}") from None
    if not der:
        raise IdentityError(f"the node at {target} presented no certificate")
    name, role = keys.identity_of(ssl.DER_cert_to_PEM_cert(der).encode("ascii"))
    return Identity(target, name, role)


def _a(role: str) -> str:
    """``role`` with its article: 'a worker', 'an edge', 'a role-less'."""
    role = role or "role-less"
    return f"{'an' if role[0] in 'aeiou' else 'a'} {role}"


def parent_identity(
    target: str,
    creds: keys.Credentials,
    roles: Collection[str] = keys.PARENT_ROLES,
    name: str | None = None,
    timeout_s: float = 10.0,
) -> Identity:
    """The identity of the parent at ``target``; refuses a role not in ``roles``.

    ``name``, when given, is the parent's expected node id.
    """
    got = peer_identity(target, creds, timeout_s)
    if got.role not in roles:
        raise IdentityError(
            f"the node at {target} holds {_a(got.role)} certificate ({got.name!r}), "
            f"not {_a(' or '.join(roles))} certificate: refusing to work for it"
        )
    if name is not None and got.name != name:
        raise IdentityError(
            f"the node at {target} is {got.role} {got.name!r}, not the expected {name!r}"
        )
    return got


def neighbour_identity(
    target: str, creds: keys.Credentials, neighbour: str, timeout_s: float = 10.0
) -> Identity:
    """The identity of neighbour ``neighbour`` at ``target``: a worker certificate of that name."""
    got = peer_identity(target, creds, timeout_s)
    if got.role != "worker" or got.name != neighbour:
        raise IdentityError(
            f"the node at {target} holds {_a(got.role)} certificate named "
            f"{got.name!r}, not the worker certificate of neighbour {neighbour!r}"
        )
    return got
