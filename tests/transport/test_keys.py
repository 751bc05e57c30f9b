"""Project CA and node certificates, and the ``keys`` command."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from murmura.errors import ConfigError
from murmura.transport import keys
from murmura.transport.keys_cli import app


def test_issue_names_the_node_and_role(tmp_path: Path) -> None:
    keys.init_ca(tmp_path)
    files = keys.issue(tmp_path, "worker-7", "worker", hosts=["10.0.0.7", "edge.example"])
    assert keys.identity_of(files.cert.read_bytes()) == ("worker-7", "worker")
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "edge.example" in san.get_values_for_type(x509.DNSName)
    assert files.key.stat().st_mode & 0o777 == 0o600
    assert keys.Credentials.load(files.cert, files.key, files.ca).name == "worker-7"


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keys init"):
        keys.issue(tmp_path, "w", "worker")
    keys.init_ca(tmp_path)
    with pytest.raises(ConfigError, match="already holds a CA"):
        keys.init_ca(tmp_path)
    with pytest.raises(ConfigError, match="invalid node name"):
        keys.issue(tmp_path, "../evil", "worker")
    with pytest.raises(ConfigError, match="invalid role 'root'; valid: .*admin"):
        keys.issue(tmp_path, "w", "root")
    admin = keys.issue(tmp_path, "alice", "admin")  # manages a federation's jobs
    assert keys.identity_of(admin.cert.read_bytes()) == ("alice", "admin")
    keys.issue(tmp_path, "w", "worker")
    with pytest.raises(ConfigError, match="already exists"):
        keys.issue(tmp_path, "w", "worker")


def test_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["init", str(tmp_path / "k")]).exit_code == 0
    res = runner.invoke(app, ["issue", str(tmp_path / "k"), "coord", "--role", "coordinator"])
    assert res.exit_code == 0, res.output
    assert keys.identity_of((tmp_path / "k" / "coord.pem").read_bytes()) == ("coord", "coordinator")
    assert runner.invoke(app, ["issue", str(tmp_path / "k"), "x", "--role", "boss"]).exit_code == 2


def test_edge_role_and_collisions(tmp_path: Path) -> None:
    keys.init_ca(tmp_path)
    files = keys.issue(tmp_path, "edge-1", "edge")
    assert keys.identity_of(files.cert.read_bytes()) == ("edge-1", "edge")
    keys.issue(tmp_path, "coordinator", "coordinator")
    keys.issue(tmp_path, "w1", "worker", hosts=["gpu-1"])
    # a certificate answering to another node's name could pass a channel pinned to that name
    with pytest.raises(ConfigError, match="'coordinator' is the name of node 'coordinator'"):
        keys.issue(tmp_path, "evil", "worker", hosts=["coordinator"])
    with pytest.raises(ConfigError, match="'gpu-1' is already a host of 'w1'"):
        keys.issue(tmp_path, "gpu-1", "coordinator")
    assert not (tmp_path / "evil.pem").exists() and not (tmp_path / "gpu-1.pem").exists()
    keys.issue(tmp_path, "w2", "worker", hosts=["gpu-1", "w2.example"])  # shared machine: fine


def test_cli_edge_role_and_collision(tmp_path: Path) -> None:
    runner = CliRunner()
    d = str(tmp_path / "k")
    assert runner.invoke(app, ["init", d]).exit_code == 0
    res = runner.invoke(app, ["issue", d, "edge-1", "--role", "edge"])
    assert res.exit_code == 0, res.output
    assert "edge edge-1" in res.output
    res = runner.invoke(app, ["issue", d, "w", "--host", "edge-1"])
    assert res.exit_code == 2
    assert "'edge-1' is the name of node 'edge-1'" in " ".join(res.output.split())
