"""``murmura edge`` refuses to start with a certificate that is not an edge certificate."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from murmura.node.topology_cli import app
from murmura.transport import keys

CONFIG = """
[run]
name = "tree"
rounds = 1

[task]
name = "digits"

[partition]
kind = "iid"
num_clients = 2

[edge]
name = "edge-1"
parent = "127.0.0.1:1"
key_dir = "{keys}"
state_dir = "{state}"
"""


def test_an_edge_with_a_worker_certificate_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    keys.init_ca(d)
    keys.issue(d, "edge-1", "worker")
    cfg = tmp_path / "edge.toml"
    cfg.write_text(CONFIG.format(keys=d, state=tmp_path / "state"))
    res = CliRunner().invoke(app, ["edge", str(cfg)])
    assert res.exit_code == 2, res.output
    said = " ".join(res.output.split())
    assert "error: edge 'edge-1': its certificate has role 'worker'" in said
    assert f"murmura keys issue {d} edge-1 --role edge" in said
    assert not (tmp_path / "state").exists()  # refused before anything was started
