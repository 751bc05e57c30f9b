"""The authors' signatures in an audit ledger: each update record checked against the CA.

The ledger key proves only that the coordinator wrote a record. An ``update_received`` record
also holds its worker's signature of (run, round, node, kind, example count, SHA-256 of the
update) and names the signing certificate by fingerprint; the certificate itself (PEM) is in
an earlier record (the worker's ``join``). ``WorkerSignatures`` checks that the certificate
was issued by the project CA to that node as a worker (or an edge, whose updates are its
children's aggregate), was valid when the record was written, and signed exactly what the
record states, so a coordinator that holds the ledger key still cannot forge or alter the
record of a worker's update (``murmura audit verify --ca``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from murmura.errors import AuditError, SignatureError
from murmura.ops.audit import Record
from murmura.transport.keys import CHILD_ROLES
from murmura.update_signing import UpdateStatement, fingerprint, verify_update


def load_ca(path: Path) -> x509.Certificate:
    """The project CA certificate (PEM) the verifier trusts."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise AuditError(f"cannot read the CA certificate {path}: {reason}") from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise AuditError(f"{path} is not a PEM CA certificate") from None


class WorkerSignatures:
    """A ``RecordCheck``: every update record carries a valid signature by its worker."""

    def __init__(self, ca: x509.Certificate) -> None:
        self.ca = ca
        self.certs: dict[str, x509.Certificate] = {}
        self.checked = 0
        """Update signatures that verified."""

    @classmethod
    def from_file(cls, path: Path) -> WorkerSignatures:
        """Check against the CA certificate in ``path``."""
        return cls(load_ca(path))

    def __call__(self, rec: Record) -> str | None:
        """Why ``rec`` is bad (a certificate it holds, or its update's signature); else None."""
        details = rec.details()
        if "certificate" in details:
            why = self._remember(details)
            if why is not None:
                return why
        if rec.event != "update_received":
            return None
        return self._check_update(rec, details)

    def _remember(self, details: dict[str, object]) -> str | None:
        pem = details["certificate"]
        try:
            cert = x509.load_pem_x509_certificate(str(pem).encode())
        except ValueError:
            return "the certificate it holds does not parse"
        if fingerprint(cert) != details.get("cert_sha256"):
            return "the certificate it holds does not match its cert_sha256"
        self.certs[fingerprint(cert)] = cert
        return None

    def _check_update(self, rec: Record, d: dict[str, object]) -> str | None:
        signature, cert_sha256 = d.get("signature"), d.get("cert_sha256")
        if not isinstance(signature, str) or not isinstance(cert_sha256, str):
            return f"the update of node {rec.node!r} carries no worker signature"
        cert = self.certs.get(cert_sha256)
        if cert is None:
            return f"no earlier record holds the certificate {cert_sha256[:16]}... it names"
        why = self._issued(cert, rec)
        if why is not None:
            return why
        if "blake3" in d and "sha256" in d:
            return "the update record holds two digests (blake3 and sha256)"
        algorithm = "blake3" if "blake3" in d else "sha256"  # sha256: an earlier release's
        kind, n, digest = d.get("kind"), d.get("num_examples"), d.get(algorithm)
        if not isinstance(kind, str) or type(n) is not int or not isinstance(digest, str):
            return "the update record lacks its kind, example count or digest"
        try:
            statement = UpdateStatement(
                rec.run_id, rec.round, rec.node, kind, n, bytes.fromhex(digest), algorithm
            )
            verify_update(cert, statement, bytes.fromhex(signature))
        except ValueError:
            return "the update record's digest or signature is not hex"
        except SignatureError as exc:
            return f"worker signature of node {rec.node!r}: {exc}"
        self.checked += 1
        return None

    def _issued(self, cert: x509.Certificate, rec: Record) -> str | None:
        """Why ``cert`` cannot vouch for ``rec``'s node at ``rec``'s time; None if it can."""
        try:
            cert.verify_directly_issued_by(self.ca)
        except (ValueError, TypeError, InvalidSignature):
            return f"the certificate of node {rec.node!r} is not issued by the given CA"
        name, role = _identity(cert)
        if name != rec.node or role not in CHILD_ROLES:
            return f"the signing certificate is {role!r} {name!r}, not worker {rec.node!r}"
        try:
            when = dt.datetime.fromisoformat(rec.time)
        except ValueError:
            return "the record's time does not parse"
        if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
            return f"the certificate of node {rec.node!r} was not valid at {rec.time}"
        return None


def _identity(cert: x509.Certificate) -> tuple[str, str]:
    """(common name, organizational unit): a node's id and role, as ``murmura keys`` issues."""
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return (str(cn[0].value) if cn else "", str(ou[0].value) if ou else "")
