"""A worker's signature of the update it sends: what is signed, signing, and checking it.

The worker signs a statement of (run, round, node, kind, example count, digest algorithm,
digest of the update bytes) with the private key of its TLS certificate (ECDSA P-256,
SHA-256, DER), so the signature ties the update to the certificate the project CA issued and
needs no other key.
The coordinator checks it against the certificate the TLS handshake presented and keeps it in
its audit ledger; ``murmura audit verify --ca`` checks it again later, so a coordinator
cannot forge the record of a worker's update. Core on purpose: the transport signs and checks,
the audit ledger verifies, and neither imports the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from murmura.errors import SignatureError

DOMAIN = b"murmura.update.v2\n"
"""Prefix of every signed statement: a signature made for anything else never verifies here."""
DOMAIN_V1 = b"murmura.update.v1\n"
"""Prefix of the statements of earlier releases, which named no algorithm (SHA-256): an
audit ledger written by one still verifies."""
MAX_SIGNATURE_BYTES = 256
"""Longest signature accepted (a DER ECDSA P-256 signature takes at most 72 bytes)."""


@dataclass(frozen=True, slots=True)
class UpdateStatement:
    """What a worker vouches for: its update of one round of one run, by digest."""

    run_id: str
    round: int
    node: str
    kind: str
    """The result kind's name, ``"FIT"``."""
    num_examples: int
    digest: bytes
    algorithm: str = "sha256"
    """The digest's algorithm: ``"blake3"`` (``murmura.transport.digests``) from this release
    on; ``"sha256"`` is the v1 statement of earlier ones, kept so their ledgers verify."""

    def encode(self) -> bytes:
        """The canonical bytes that are signed: a domain line, then a compact JSON array.

        The algorithm is part of what is signed (v2), so a signature binds the exact bytes
        only under the hash it was made with; the v1 form (SHA-256) names none.
        """
        head = [self.run_id, self.round, self.node, self.kind, self.num_examples]
        if self.algorithm == "sha256":
            domain, body = DOMAIN_V1, [*head, self.digest.hex()]
        else:
            domain, body = DOMAIN, [*head, self.algorithm, self.digest.hex()]
        return domain + json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()


class UpdateSigner:
    """Signs update statements with a node's TLS private key (PEM)."""

    def __init__(self, key_pem: bytes) -> None:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SignatureError("the node's TLS key is not an ECDSA key (see `murmura keys`)")
        self._key = key

    def sign(self, statement: UpdateStatement) -> bytes:
        """The DER-encoded ECDSA-SHA256 signature of ``statement``."""
        return self._key.sign(statement.encode(), ec.ECDSA(hashes.SHA256()))


def verify_update(cert: x509.Certificate, statement: UpdateStatement, signature: bytes) -> None:
    """Check that ``cert``'s key signed ``statement``; ``SignatureError`` says why not."""
    if not signature:
        raise SignatureError("the update carries no signature")
    if len(signature) > MAX_SIGNATURE_BYTES:
        raise SignatureError(f"a signature of {len(signature)} B (limit {MAX_SIGNATURE_BYTES} B)")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureError("the certificate's key is not an ECDSA key")
    try:
        key.verify(signature, statement.encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureError(
            "the signature does not verify with the sender's certificate "
            "(forged, or run, round, node, example count or digest changed)"
        ) from None


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER bytes, hex: how ledger records name a certificate."""
    return cert.fingerprint(hashes.SHA256()).hex()


def certificate_pem(cert: x509.Certificate) -> str:
    """The certificate as PEM text."""
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
