"""A worker's update signature: made with its TLS key, checked against its certificate."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cryptography import x509

from murmura.errors import SignatureError
from murmura.transport import keys
from murmura.update_signing import (
    DOMAIN,
    DOMAIN_V1,
    UpdateSigner,
    UpdateStatement,
    fingerprint,
    verify_update,
)

STATEMENT = UpdateStatement("run-1", 3, "w1", "FIT", 12, bytes(range(32)), "blake3")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    keys.init_ca(root)
    for name in ("w1", "w2"):
        keys.issue(root, name, "worker")
    return root


def _node(root: Path, name: str) -> tuple[UpdateSigner, x509.Certificate]:
    f = keys.node_files(root, name)
    return UpdateSigner(f.key.read_bytes()), x509.load_pem_x509_certificate(f.cert.read_bytes())


def test_the_statement_is_canonical() -> None:
    assert STATEMENT.encode() == DOMAIN + (
        b'["run-1",3,"w1","FIT",12,"blake3","' + bytes(range(32)).hex().encode() + b'"]'
    )
    # an earlier release's statement (SHA-256, no algorithm named), as its ledgers hold it
    v1 = dataclasses.replace(STATEMENT, algorithm="sha256")
    assert v1.encode() == DOMAIN_V1 + (
        b'["run-1",3,"w1","FIT",12,"' + bytes(range(32)).hex().encode() + b'"]'
    )


def test_a_signature_verifies_only_for_its_statement_and_its_certificate(pki: Path) -> None:
    signer, cert = _node(pki, "w1")
    _, other = _node(pki, "w2")
    sig = signer.sign(STATEMENT)
    verify_update(cert, STATEMENT, sig)
    assert len(fingerprint(cert)) == 64
    with pytest.raises(SignatureError, match="does not verify"):
        verify_update(other, STATEMENT, sig)
    changes = {"run_id": "run-2", "round": 4, "node": "w2", "kind": "EVALUATE",
               "num_examples": 13, "digest": bytes(32), "algorithm": "sha256"}  # fmt: skip
    for field, value in changes.items():
        with pytest.raises(SignatureError, match="does not verify"):
            verify_update(cert, dataclasses.replace(STATEMENT, **{field: value}), sig)
    with pytest.raises(SignatureError, match="no signature"):
        verify_update(cert, STATEMENT, b"")
    with pytest.raises(SignatureError, match="limit"):
        verify_update(cert, STATEMENT, bytes(300))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_update(cert, STATEMENT, b"\x30\x03garbage")
