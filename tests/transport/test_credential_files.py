"""A wrong certificate, key or CA path is one line naming the file, exit 2, in every role."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from murmura.cli import app
from murmura.errors import ConfigError
from murmura.transport import keys

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    keys.init_ca(d)
    for name in ("w1", "w2", "coordinator", "edge-1", "peer-0"):
        keys.issue(d, name, "worker")
    return d


def test_load_names_the_missing_damaged_or_foreign_file(pki: Path, tmp_path: Path) -> None:
    cert, key, ca = pki / "w1.pem", pki / "w1.key", pki / "ca.pem"
    with pytest.raises(ConfigError, match=f"cannot read the node certificate {tmp_path}/no.pem"):
        keys.Credentials.load(tmp_path / "no.pem", key, ca)
    with pytest.raises(ConfigError, match=f"cannot read the CA certificate {pki}: Is a dir"):
        keys.Credentials.load(cert, key, pki)
    with pytest.raises(ConfigError, match=f"^{ca} is not a PEM node private key$"):
        keys.Credentials.load(cert, ca, ca)
    with pytest.raises(ConfigError, match=f"^{key} is not a PEM CA certificate$"):
        keys.Credentials.load(cert, key, key)
    with pytest.raises(ConfigError, match=f"private key {pki / 'w2.key'} does not belong"):
        keys.Credentials.load(cert, pki / "w2.key", ca)
    assert keys.Credentials.load(cert, key, ca).name == "w1"


def _one_line_error(out: str, path: Path) -> None:
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], out


def test_every_role_refuses_a_wrong_path_in_one_line(pki: Path, tmp_path: Path) -> None:
    gone = tmp_path / "gone.pem"
    client = runner.invoke(
        app,
        [
            "client",
            "--server",
            "127.0.0.1:1",
            "--partition",
            "0/2",
            "--cert",
            str(gone),
            "--key",
            str(pki / "w1.key"),
            "--ca",
            str(pki / "ca.pem"),
        ],
    )
    assert client.exit_code == 2
    _one_line_error(client.output, gone)

    server_cfg = tmp_path / "server.toml"
    server_cfg.write_text(
        f'[run]\nrounds = 1\n[server]\ncert = "{gone}"\n'
        f'key = "{pki}/coordinator.key"\nca = "{pki}/ca.pem"\n'
    )
    server = runner.invoke(app, ["server", str(server_cfg)])
    assert server.exit_code == 2
    _one_line_error(server.output, gone)

    empty = tmp_path / "empty-keys"
    empty.mkdir()
    edge_cfg = tmp_path / "edge.toml"
    edge_cfg.write_text(
        f'[run]\nrounds = 1\n[edge]\nname = "edge-1"\nparent = "127.0.0.1:1"\nkey_dir = "{empty}"\n'
    )
    edge = runner.invoke(app, ["edge", str(edge_cfg)])
    assert edge.exit_code == 2
    _one_line_error(edge.output, empty / "edge-1.pem")

    (tmp_path / "not-a-dir").write_text("x")
    init = runner.invoke(app, ["keys", "init", str(tmp_path / "not-a-dir")])
    assert init.exit_code == 2
    _one_line_error(init.output, tmp_path / "not-a-dir")

    for flag in ("--key", "--ca"):
        audit = runner.invoke(app, ["audit", "verify", str(tmp_path), flag, str(gone)])
        assert audit.exit_code == 2
        _one_line_error(audit.output, gone)


def test_peer_refuses_a_damaged_certificate(pki: Path, tmp_path: Path) -> None:
    keydir = tmp_path / "keys"
    keydir.mkdir()
    for f in ("ca.pem", "peer-0.key"):
        (keydir / f).write_bytes((pki / f).read_bytes())
    (keydir / "peer-0.pem").write_text("not a certificate\n")
    cfg = tmp_path / "ring.toml"
    cfg.write_text(
        '[run]\nrounds = 1\n[task]\nname = "synthetic"\n[partition]\nnum_clients = 3\n'
        '[topology]\nkind = "ring"\n'
        '[peers]\naddresses = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]\n'
        f'key_dir = "{keydir}"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
    )
    peer = runner.invoke(app, ["peer", str(cfg), "--id", "0"])
    assert peer.exit_code == 2
    assert peer.output.strip() == f"error: {keydir / 'peer-0.pem'} is not a PEM node certificate"


@pytest.mark.slow
def test_a_wrong_cert_path_is_one_line_and_exit_2_in_a_real_process(pki: Path) -> None:
    gone = pki / "no-such-dir" / "w1.pem"
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            "from murmura.cli import app; app(prog_name='murmura')",
            "client",
            "--server",
            "127.0.0.1:1",
            "--partition",
            "0/2",
            "--cert",
            str(gone),
            "--key",
            str(pki / "w1.key"),
            "--ca",
            str(pki / "ca.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "60"},
    )
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert "Traceback" not in out
    assert (
        out.strip() == f"error: cannot read the node certificate {gone}: No such file or directory"
    )
