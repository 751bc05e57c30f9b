"""Worker signatures in the audit ledger: a coordinator with the ledger key cannot forge them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import blake3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from murmura.ops.audit import AuditLedger, Record, read_records, verify_records
from murmura.ops.audit_authors import WorkerSignatures
from murmura.transport import keys
from murmura.update_signing import UpdateSigner, UpdateStatement, certificate_pem, fingerprint

DIGEST = hashlib.sha256(b"update").digest()
B3 = blake3.blake3(b"update").digest()
_NOT_VERIFIED = (
    "the signature does not verify with the sender's certificate "
    "(forged, or run, round, node, example count or digest changed)"
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root, other = tmp_path_factory.mktemp("pki"), tmp_path_factory.mktemp("other")
    keys.init_ca(root)
    for name in ("w1", "w2"):
        keys.issue(root, name, "worker")
    keys.issue(root, "e1", "edge")
    keys.issue(root, "coordinator", "coordinator")
    keys.init_ca(other)
    keys.issue(other, "w1", "worker")
    return root, other


def _cert(root: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(keys.node_files(root, name).cert.read_bytes())


def _ledger(
    tmp: Path,
    root: Path,
    signer: str = "w1",
    cert_of: str = "w1",
    node: str = "w1",
    algorithm: str = "sha256",
    label: str | None = None,
    **update: object,
) -> list[Record]:
    """A join of w1 (``cert_of``'s certificate) and one signed update of w1; ``update`` edits
    the record as the coordinator would forge it (after the worker signed). ``algorithm``:
    the digest the worker signed (sha256: an earlier release's record); ``label``: the key the
    record stores it under (default: the algorithm's name)."""
    cert = _cert(root, cert_of)
    key = UpdateSigner(keys.node_files(root, signer).key.read_bytes())
    digest = DIGEST if algorithm == "sha256" else B3
    sig = key.sign(UpdateStatement("run-1", 1, node, "FIT", 5, digest, algorithm))
    details: dict[str, object] = {
        label or algorithm: digest.hex(), "num_examples": 5, "kind": "FIT",
        "signature": sig.hex(), "cert_sha256": fingerprint(cert), **update,
    }  # fmt: skip
    ledger_key = Ed25519PrivateKey.generate()
    ledger = AuditLedger(tmp / "audit.sqlite", ledger_key)
    join = {"cert_sha256": fingerprint(cert), "certificate": certificate_pem(cert)}
    ledger.append("run-1", 0, node, "join", **join)
    ledger.append("run-1", 1, "coordinator", "round_start", connected=1, cohort=1)
    ledger.append("run-1", 1, node, "update_received", **details)
    ledger.close()
    records = list(read_records(tmp / "audit.sqlite"))
    assert verify_records(records, ledger_key.public_key()).ok  # the ledger key sees no fault
    return records


def _verdict(records: list[Record], ca: x509.Certificate) -> tuple[int | None, str]:
    check = WorkerSignatures(ca)
    for rec in records:
        why = check(rec)
        if why is not None:
            return rec.seq, why
    assert check.checked == 1
    return None, ""


def test_a_signed_update_verifies_against_the_ca(pki: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = pki
    assert _verdict(_ledger(tmp_path, root), _cert(root, "ca")) == (None, "")
    join = _ledger(tmp_path / "x", root)[0].details()
    assert join["certificate"] == certificate_pem(_cert(root, "w1"))  # kept whole, not cut


def test_an_edge_signs_its_aggregate_update(pki: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = pki
    records = _ledger(tmp_path, root, signer="e1", cert_of="e1", node="e1")
    assert _verdict(records, _cert(root, "ca")) == (None, "")


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"sha256": hashlib.sha256(b"other").hexdigest()}, "does not verify"),
        ({"num_examples": 50}, "does not verify"),
        ({"signature": "30" + "00" * 40}, "does not verify"),
        ({"signature": "zz"}, "not hex"),
        ({"signer": "w2"}, "does not verify"),  # signed with another worker's key
        ({"cert_of": "w2"}, "not worker 'w1'"),  # another worker's certificate
        ({"cert_of": "coordinator", "signer": "coordinator"}, "'coordinator'"),
        ({"cert_sha256": "ab" * 32}, "no earlier record holds the certificate"),
    ],
)
def test_a_forged_update_record_is_named(
    pki: tuple[Path, Path], tmp_path: Path, kwargs: dict[str, object], why: str
) -> None:
    root, _ = pki
    records = _ledger(tmp_path, root, **kwargs)  # type: ignore[arg-type]
    seq, reason = _verdict(records, _cert(root, "ca"))
    assert seq == 3 and why in reason, reason


def test_an_unsigned_update_and_a_foreign_ca_are_refused(
    pki: tuple[Path, Path], tmp_path: Path
) -> None:
    root, other = pki
    records = _ledger(tmp_path, root, signature=None)  # a coordinator dropped the signature
    reason = _verdict(records, _cert(root, "ca"))[1]
    assert reason == "the update of node 'w1' carries no worker signature"
    records = _ledger(tmp_path / "b", root)
    assert "not issued by the given CA" in _verdict(records, _cert(other, "ca"))[1]


def test_a_blake3_record_verifies_and_cannot_be_relabelled(
    pki: tuple[Path, Path], tmp_path: Path
) -> None:
    root, _ = pki
    ca = _cert(root, "ca")
    assert _verdict(_ledger(tmp_path / "ok", root, algorithm="blake3"), ca) == (None, "")
    # The same digest bytes stored as an earlier release's SHA-256: the v1 statement differs.
    relabelled = _ledger(tmp_path / "v1", root, algorithm="blake3", label="sha256")
    assert _verdict(relabelled, ca) == (3, "worker signature of node 'w1': " + _NOT_VERIFIED)
    both = _ledger(tmp_path / "both", root, algorithm="blake3", sha256=DIGEST.hex())
    assert _verdict(both, ca) == (3, "the update record holds two digests (blake3 and sha256)")
    forged = _ledger(tmp_path / "b3", root, algorithm="blake3", blake3=bytes(32).hex())
    assert _verdict(forged, ca)[1].endswith(_NOT_VERIFIED)
