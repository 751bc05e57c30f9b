"""Bandwidth planning: rates, per-topology figures, the ``murmura plan bandwidth`` command."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from murmura.cli import app
from murmura.compress import framed_size, make_codec
from murmura.compress.plan import Links, p2p, parse_duration, parse_rate, star, tree
from murmura.compress.plan_cli import human


@pytest.mark.parametrize(
    ("text", "bits"), [("10Mbit", 1e7), ("50 mbps", 5e7), ("1Gbit", 1e9), ("800kbit", 8e5)]
)
def test_rates_parse(text: str, bits: float) -> None:
    assert parse_rate(text) == bits


@pytest.mark.parametrize("text", ["10MB/x", "-1Mbit", "0", "fast"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected a positive number of bits/s"):
        parse_rate(text)


def test_durations_parse() -> None:
    assert (parse_duration("50ms"), parse_duration("0.2s"), parse_duration("0")) == (0.05, 0.2, 0)


def test_star_round_bytes_and_time() -> None:
    links = Links(uplink=10e6, downlink=50e6, latency=0.05)
    p = star(d=1000, cohort=10, up=500, links=links)
    assert (p.node_up, p.node_down, p.hub_up, p.hub_down, p.total) == (
        500,
        4000,
        5000,
        40000,
        45000,
    )
    # 10 models out of the coordinator's 10 Mbit uplink, 10 updates into its 50 Mbit downlink
    assert p.seconds == pytest.approx(0.05 + 10 * 32000 / 10e6 + 0.05 + 10 * 4000 / 50e6)


def test_tree_and_p2p_round_bytes() -> None:
    links = Links(10e6, 10e6)
    t = tree(d=100, clients=8, edges=2, up=40, links=links)
    assert (t.hub_up, t.hub_down, t.total) == (4 * 40 + 400, 4 * 400 + 400, 8 * 440 + 2 * 800)
    t = tree(d=100, clients=8, edges=2, up=40, links=links, down=60)  # deltas to the leaves
    assert (t.node_down, t.hub_down, t.total) == (60, 4 * 60 + 400, 8 * 100 + 2 * 800)
    s = star(d=100, cohort=8, up=40, links=links, down=60)
    assert (s.node_down, s.hub_down, s.total) == (60, 8 * 60, 8 * 100)
    g = p2p(message=400, peers=16, degree=4, links=links)
    assert (g.node_up, g.total) == (1600, 16 * 1600)


def _plan(tmp: Path, compression: str) -> str:
    """``murmura plan bandwidth`` of a 10-client digits star with ``compression``."""
    cfg = tmp / "c.toml"
    cfg.write_text(
        '[task]\nname = "digits"\n[partition]\nnum_clients = 10\n[strategy]\nfraction = 1.0\n'
        f"[compression]\n{compression}\n"
    )
    out = CliRunner().invoke(
        app, ["plan", "bandwidth", str(cfg), "--uplink", "10Mbit", "--downlink", "50Mbit"]
    )
    assert out.exit_code == 0, out.output
    return out.output


def test_command_prints_both_uplinks(tmp_path: Path) -> None:
    output = _plan(tmp_path, 'uplink = "qsgd"\nargs = { levels = 1 }')
    up = framed_size(make_codec("qsgd", levels=1), 4810)
    assert (
        human(up) == "1.27 kB" and human(up) in output and "19.24 kB" in output
    )  # qsgd and float32 updates
    assert "192.40 kB" in output  # the coordinator sends 10 float32 models


def test_command_plans_a_compressed_downlink(tmp_path: Path) -> None:
    output = _plan(tmp_path, 'downlink = "quantize"\ndownlink_args = { bits = 4 }')
    down = framed_size(make_codec("quantize", bits=4), 4810)
    assert "down quantize" in output and human(10 * down) in output  # 10 deltas
    assert "192.40 kB" in output  # float32: 10 models


def test_command_refuses_a_bad_rate_in_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    out = CliRunner().invoke(
        app, ["plan", "bandwidth", str(cfg), "--uplink", "x", "--downlink", "1"]
    )
    assert out.exit_code == 2 and "rate 'x'" in out.output


def test_command_plans_secagg_masked_inputs_in_both_rings(tmp_path: Path) -> None:
    from murmura.privacy.secagg.messages import masked_input_size

    output = _plan(tmp_path, 'uplink = "quantize"\n[secagg]\nenabled = true')
    wide, narrow = masked_input_size(4811, 4), masked_input_size(4811, 2)
    assert "secagg + 8-bit levels" in output
    assert human(wide) in output and human(narrow) in output and human(narrow) != human(wide)
