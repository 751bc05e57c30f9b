"""Deployed roles refuse, at load time, the settings they do not apply (``role_limits``).

Each refusal is checked through the role's builder (before any data is loaded) and through
``murmura`` itself: one line naming the section and the command, exit status 2, no
traceback. Settings a role does apply are accepted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from murmura.cli import app
from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.node.deploy import build_coordinator, client_from_config
from murmura.node.role_limits import LIMITS, Role, check_role
from murmura.node.topology_deploy import build_edge, build_peer

LOCAL = {"privacy": {"mode": "local", "noise_multiplier": 1.0}}
DP_SGD = {"privacy": {"dp_sgd": True}}
CENTRAL = {"privacy": {"mode": "central", "noise_multiplier": 1.0}}
SECAGG = {"secagg": {"enabled": True}}
ANOMALY = {"anomaly": {"enabled": True}}
ATTACK = {"attack": {"kind": "sign_flip"}}
ATTACK_FILES: dict[str, dict[str, object]] = {  # a files job: its sites are not clients 0..n-1
    "task": {"name": "tabular"},
    "task.args.schema": {"label": "y", "classes": [0, 1], "features": ["a"]},
    "partition": {"kind": "files", "path": "/nonexistent", "num_clients": 4},
    "attack": {"kind": "sign_flip"},
}
ATTACK_UPLINK: dict[str, dict[str, object]] = {
    "attack": {"kind": "sign_flip"},
    "compression": {"uplink": "float16"},
}
STATS = {"stats": {"enabled": True}}
SECURE_STATS = {"stats": {"enabled": True, "secure_aggregation": True, "minmax": False}}
TRACKING = {"tracking": {"mlflow": True}}
STANDARDISE: dict[str, dict[str, object]] = {  # a tabular job split by partition, not files
    "task": {"name": "tabular"},
    "task.args.schema": {"label": "y", "classes": [0, 1], "features": ["a"]},
    "stats": {"enabled": True, "standardise": True},
}

COMPRESSED: dict[str, dict[str, object]] = {"compression": {"uplink": "float16"}}
DOWNLINK: dict[str, dict[str, object]] = {"compression": {"downlink": "float16"}}
SECURE_DOWNLINK = {**DOWNLINK, **SECAGG}
ASYNC_DOWNLINK: dict[str, dict[str, object]] = {
    **DOWNLINK,
    "clock": {"enabled": True, "mode": "async", "buffer_size": 2},
}
ASYNC: dict[str, dict[str, object]] = {
    "clock": {"enabled": True, "mode": "async", "buffer_size": 2}
}
SIMULATED_SYNC: dict[str, dict[str, object]] = {"clock": {"enabled": True, "deadline_s": 5.0}}
SIMULATED_ASYNC: dict[str, dict[str, object]] = {
    "clock": {"enabled": True, "mode": "async", "buffer_size": 2, "sigma": 1.0}
}
ASYNC_FEDERATED: dict[str, dict[str, object]] = {
    **ASYNC,
    "evaluation": {"federated": True},
}
SIMULATED_CLOCK = (
    "[clock] enabled = true with mode = 'sync' or a simulated client's speed, availability or "
    "bandwidth"
)
REFUSED: list[tuple[Role, dict[str, dict[str, object]], str]] = [
    ("server", ATTACK_FILES, "[attack] with partition.kind = 'files'"),
    ("server", SECURE_STATS, "[stats] secure_aggregation = true"),
    ("client", ATTACK_FILES, "[attack] with partition.kind = 'files'"),
    ("client", ATTACK_UPLINK, "[attack] with [compression] uplink != 'none'"),
    ("edge", ANOMALY, "[anomaly] enabled = true"),
    ("edge", STATS, "[stats] enabled = true"),
    ("edge", TRACKING, "[tracking] mlflow = true"),
    ("peer", TRACKING, "[tracking] mlflow = true"),
    ("peer", STATS, "[stats] enabled = true"),
    ("server", SECURE_DOWNLINK, "[compression] downlink != 'none' with [secagg] enabled = true"),
    ("server", ASYNC_DOWNLINK, "[compression] downlink != 'none' with [clock] mode = 'async'"),
    ("server", SIMULATED_SYNC, SIMULATED_CLOCK),
    ("server", SIMULATED_ASYNC, SIMULATED_CLOCK),
    ("client", SIMULATED_SYNC, SIMULATED_CLOCK),
    ("server", ASYNC_FEDERATED, "[evaluation] federated = true with [clock] mode = 'async'"),
    ("edge", ASYNC, "[clock] enabled = true"),
    ("server", STANDARDISE, "[stats] standardise = true"),
    ("client", STANDARDISE, "[stats] standardise = true"),
]
ACCEPTED: list[tuple[Role, dict[str, dict[str, object]]]] = [
    ("server", CENTRAL),
    ("server", SECAGG),
    ("client", CENTRAL),
    ("client", SECAGG),
    ("client", ANOMALY),
    ("client", SECURE_STATS),
    ("server", STATS),
    ("server", ANOMALY),
    ("server", LOCAL),
    ("server", DP_SGD),
    ("client", LOCAL),
    ("client", DP_SGD),
    ("server", TRACKING),
    ("client", TRACKING),
    ("edge", LOCAL),
    ("edge", DP_SGD),
    ("peer", LOCAL),
    ("peer", DP_SGD),
    ("server", COMPRESSED),
    ("client", COMPRESSED),
    ("edge", COMPRESSED),
    ("server", ASYNC),  # FedBuff in real time (murmura.node.async_coordinator)
    ("client", ASYNC),
    ("server", ATTACK),  # the workers the attack chooses attack (attacks.wiring)
    ("client", ATTACK),
    ("edge", CENTRAL),  # EdgeSum over its allowlisted clients (topology_deploy)
    ("edge", SECAGG),  # per-edge SecAgg+
    ("edge", ATTACK),  # its children attack; the edge aggregates them as a simulated edge
    ("server", DOWNLINK),
    ("client", DOWNLINK),
    ("edge", DOWNLINK),
]


def _toml(tables: dict[str, dict[str, object]]) -> str:
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        for key, value in table.items():
            shown = str(value).lower() if isinstance(value, bool) else repr(value)
            lines.append(f"{key} = {shown}".replace("'", '"'))
    return "\n".join(lines) + "\n"


def _config_file(tmp: Path, role: Role, tables: dict[str, dict[str, object]]) -> Path:
    """A deployment config of ``role`` with ``tables`` (P2P for a peer)."""
    base: dict[str, dict[str, object]] = {"partition": {"num_clients": 4}}
    if role == "peer":
        base["topology"] = {"kind": "ring"}
        base["peers"] = {"addresses": [f"127.0.0.1:{5000 + i}" for i in range(4)]}
    elif role == "edge":
        base["edge"] = {"name": "edge-1", "parent": "127.0.0.1:1", "state_dir": str(tmp / "e")}
    else:
        base["server"] = {"state_dir": str(tmp / "s")}
    path = tmp / f"{role}.toml"
    path.write_text(_toml({**base, **tables}))
    return path


def _build(role: Role, path: Path) -> None:
    from murmura.node.deploy import split_config

    if role == "peer":
        build_peer(path, 0, insecure=True)
    elif role == "edge":
        build_edge(path, insecure=True)
    else:
        cfg, section = split_config(path)
        if role == "server":
            build_coordinator(cfg, section, insecure=True)
        else:
            client_from_config(cfg, "0/4")


@pytest.mark.parametrize(("role", "tables", "setting"), REFUSED)
def test_a_role_refuses_what_it_does_not_apply(
    tmp_path: Path, role: Role, tables: dict[str, dict[str, object]], setting: str
) -> None:
    path = _config_file(tmp_path, role, tables)
    with pytest.raises(ConfigError) as err:
        _build(role, path)
    message = str(err.value)
    assert message.startswith(f"{setting} is not applied by murmura {role}")
    assert "\n" not in message
    assert not (tmp_path / "s").exists()  # refused before any state was written


def test_every_limit_is_tested() -> None:
    tested = {(role, setting) for role, _, setting in REFUSED}
    assert tested == {(role, lim.setting) for role, lims in LIMITS.items() for lim in lims}


@pytest.mark.parametrize(("role", "tables"), ACCEPTED)
def test_what_a_role_applies_is_accepted(role: Role, tables: dict[str, dict[str, object]]) -> None:
    check_role(role, config_from_dict({"partition": {"num_clients": 4}, **tables}))


@pytest.mark.parametrize(
    ("role", "args"),
    [
        ("server", ["--insecure"]),
        ("client", ["--insecure", "--server", "127.0.0.1:1", "--partition", "0/4"]),
        ("edge", ["--insecure"]),
        ("peer", ["--insecure", "--id", "0"]),
    ],
)
def test_the_command_says_one_line_and_exits_2(tmp_path: Path, role: Role, args: list[str]) -> None:
    sync_clock = {"clock": {"enabled": True, "mode": "sync"}}  # simulated time: no role runs it
    path = _config_file(tmp_path, role, ATTACK if role == "peer" else sync_clock)
    where = ["--config", str(path)] if role == "client" else [str(path)]
    result = CliRunner().invoke(app, [role, *where, *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    if role == "peer":  # refused for every peer-to-peer run, simulated too, as the config loads
        assert "key 'attack': [attack] wraps a star's or a tree's clients" in text
    else:
        assert "error: [clock] enabled = true" in text
        assert f"is not applied by murmura {role}" in text
