"""A deployed peer attacks only when started with ``--attack``; config keys cannot make it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from murmura.attacks.peer_sender import PEER_ATTACKS, peer_attack
from murmura.config.topology import TopologySection
from murmura.errors import ConfigError
from murmura.node.topology_cli import app, parse_attack
from murmura.node.topology_deploy import RedTeam, build_peer, check_deployable

CONFIG = """
[run]
name = "red"
rounds = 1

[task]
name = "digits"

[partition]
num_clients = 3

[topology]
kind = "ring"
robust = "clipped"
{extra}

[peers]
addresses = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
state_dir = "{state}"
"""


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "ring.toml"
    path.write_text(CONFIG.format(extra=extra, state=tmp_path / "state"))
    return path


def test_parse_attack_reads_toml_values_and_needs_the_attack_flag() -> None:
    assert parse_attack(None, []) is None
    assert parse_attack("gaussian", ["std=100", "note=x y"]) == RedTeam(
        "gaussian", {"std": 100, "note": "x y"}
    )
    with pytest.raises(ConfigError, match="needs --attack NAME"):
        parse_attack(None, ["std=100"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_attack("gaussian", ["std"])


def test_only_update_attacks_run_on_a_peer_with_valid_arguments() -> None:
    for kind in ("label_flip", "alie", "inflate", "nonsense"):
        with pytest.raises(ConfigError, match="valid: " + ", ".join(PEER_ATTACKS)):
            peer_attack(kind, {}, "peer-0", 2, 0)
    with pytest.raises(ConfigError, match="gaussian"):
        peer_attack("gaussian", {"sigma": 1.0}, "peer-0", 2, 0)
    with pytest.raises(ConfigError, match="must be > 0"):
        peer_attack("scaling", {"boost": -1.0}, "peer-0", 2, 0)


def test_peer_senders_reuse_the_update_attacks_on_the_round_delta() -> None:
    before = np.ones(1000, dtype=np.float32)
    after = before + np.float32(0.5)
    flipped = peer_attack("sign_flip", {}, "peer-0", 2, 0)(3, before, after)
    np.testing.assert_allclose(flipped, before - 0.5)
    scaled = peer_attack("scaling", {"boost": 50.0}, "peer-0", 2, 0)(3, before, after)
    np.testing.assert_allclose(scaled, before + 25.0)
    default = peer_attack("scaling", {}, "peer-0", 2, 0)(3, before, after)
    np.testing.assert_allclose(default, before + 1.5)  # boost = neighbourhood of 3 / lr 1
    noisy = peer_attack("gaussian", {"std": 100.0}, "peer-0", 2, 0)
    a, b = noisy(3, before, after), noisy(4, before, after)
    assert a.dtype == np.float32 and 90 < float(np.std(a - before)) < 110
    assert not np.array_equal(a, b)  # a fresh draw every round
    np.testing.assert_array_equal(a, noisy(3, before, after))  # seeded by (round, node)


def test_deployment_refuses_what_is_simulation_only_and_config_byzantine_keys() -> None:
    check_deployable(TopologySection(kind="ring", robust="clipped"))
    for bad in ({"time_varying": True}, {"dropout": 0.1}):
        with pytest.raises(ConfigError, match="simulation-only"):
            check_deployable(TopologySection(kind="ring", **bad))
    for bad in ({"byzantine_peers": [1]}, {"byzantine_fraction": 0.2}):
        with pytest.raises(ConfigError, match="--attack NAME"):
            check_deployable(TopologySection(kind="ring", **bad))


def test_build_peer_attacks_only_with_the_flag_and_says_so_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config(tmp_path)
    assert build_peer(path, 1, insecure=True).sender is None
    with caplog.at_level(logging.WARNING):
        node = build_peer(path, 1, insecure=True, attack=RedTeam("scaling", {"boost": 50}))
    assert node.sender is not None
    assert "RED-TEAM PEER: attack scaling" in caplog.text


def test_cli_refuses_config_byzantine_keys_and_attack_args_without_attack(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["peer", str(write_config(tmp_path)), "--id", "0", "--insecure",
                              "--attack-arg", "std=100"])  # fmt: skip
    assert res.exit_code == 2 and "needs --attack" in res.output
    byz = write_config(tmp_path, 'byzantine_peers = [0]\nattack = "sign_flip"')
    res = runner.invoke(app, ["peer", str(byz), "--id", "0", "--insecure"])
    assert res.exit_code == 2 and "--attack" in res.output
    res = runner.invoke(app, ["peer", str(byz), "--id", "0", "--insecure", "--attack", "gaussian"])
    assert res.exit_code == 2 and "byzantine_peers" in res.output
    clean = str(write_config(tmp_path))
    res = runner.invoke(app, ["peer", clean, "--id", "0", "--insecure", "--attack", "alie"])
    assert res.exit_code == 2 and "RED-TEAM" in res.output and "cannot run" in res.output
