"""The coordinator's check that an update is signed by the worker whose certificate sent it.

The TLS handshake authenticates the caller; the signature in the Push trailer
(``murmura.update_signing``) makes the update itself verifiable later, from the audit ledger
alone. An update whose signature does not verify with the handshake's certificate is refused;
one without a signature too, unless signatures are not required (``[server]
require_signed_updates = false``, or an insecure loopback run, whose workers have no key).
What was checked goes to the ledger: the signature and the certificate's fingerprint with the
update, the certificate itself (PEM) once per coordinator process in a ``join`` record.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cryptography import x509

from murmura.errors import SignatureError
from murmura.transport.digests import UPDATE_DIGEST
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import DecodedResult
from murmura.types import Scalar
from murmura.update_signing import UpdateStatement, certificate_pem, fingerprint, verify_update


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The certificate a caller presented, parsed once."""

    cert: x509.Certificate
    fingerprint: str
    pem: str


@functools.lru_cache(maxsize=4096)
def peer_certificate(pem: bytes) -> PeerCertificate:
    """Parse a PEM certificate from the TLS handshake (cached: every call presents one)."""
    cert = x509.load_pem_x509_certificate(pem)
    return PeerCertificate(cert, fingerprint(cert), certificate_pem(cert))


class UpdateAuthenticator:
    """Checks update signatures and says which certificate details the ledger still lacks."""

    def __init__(self, required: bool) -> None:
        self.required = required
        self._recorded: set[str] = set()

    def check(self, peer: PeerCertificate | None, res: DecodedResult) -> dict[str, Scalar]:
        """The ledger details of ``res``'s verified signature; ``SignatureError`` if refused.

        Only updates are signed (not evaluation or error results); on an insecure link there
        is no certificate to check against, and nothing is recorded.
        """
        if res.update is None or peer is None:
            return {}
        if not res.signature:
            if self.required:
                raise SignatureError(
                    "the update carries no signature (required: [server] require_signed_updates)"
                )
            return {}
        kind = pb.Kind.Name(res.kind)
        statement = UpdateStatement(
            res.run_id, res.round, res.node, kind, res.num_examples, res.digest, UPDATE_DIGEST
        )
        verify_update(peer.cert, statement, res.signature)
        return {"signature": res.signature.hex(), "cert_sha256": peer.fingerprint}

    def certificate(self, peer: PeerCertificate | None) -> dict[str, Scalar]:
        """Details naming ``peer``'s certificate; with its PEM the first time it is recorded."""
        if peer is None:
            return {}
        if peer.fingerprint in self._recorded:
            return {"cert_sha256": peer.fingerprint}
        self._recorded.add(peer.fingerprint)
        return {"cert_sha256": peer.fingerprint, "certificate": peer.pem}

    def unrecorded(self, peer: PeerCertificate | None) -> bool:
        """Whether this coordinator process has not recorded ``peer``'s certificate yet."""
        return peer is not None and peer.fingerprint not in self._recorded
