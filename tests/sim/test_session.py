"""``murmura run``'s session: checkpoints every k rounds, stop, resume bitwise, refusals.

In process (the subprocess interrupted by a real SIGINT is ``test_run_interrupt.py``): a run
stopped after round k, or abandoned in the middle of a round, then resumed from its folder,
ends with the model of an uninterrupted run bit for bit, for a stateful server optimiser
(FedAdam), SCAFFOLD (client control variates), the anomaly monitor, a tree and a
peer-to-peer ring.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from murmura.config import Config, config_from_dict, load_config
from murmura.errors import CheckpointError, ConfigError
from murmura.ops.run_dir import config_sha256
from murmura.sim import session as sessions
from murmura.types import RoundMetrics

ROUNDS = 5


def _cfg(every: int = 2, **tables: dict[str, Any]) -> Config:
    data: dict[str, Any] = {
        "run": {"name": "t", "rounds": ROUNDS, "seed": 3},
        "partition": {"kind": "iid", "num_clients": 4},
        "client": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        "strategy": {"name": "fedavg", "min_clients": 2},
        "simulation": {"executor": "sequential", "checkpoint_every": every, "keep_last": 2},
    }
    for name, table in tables.items():
        data[name] = {**data.get(name, {}), **table}
    return config_from_dict(data)


def _model(run: Path) -> dict[str, np.ndarray]:
    return load_file(str(run / "model.safetensors"))


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


def _summary(run: Path) -> dict[str, Any]:
    out: dict[str, Any] = json.loads((run / "summary.json").read_text())
    return out


def test_a_run_checkpoints_every_k_rounds_keeps_the_newest_and_labels_its_model(
    tmp_path: Path,
) -> None:
    s = sessions.start(_cfg(every=2), tmp_path)
    outcome = s.run()
    run = s.run_dir.path
    assert outcome.status == "complete" and outcome.rounds == ROUNDS
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "round-00002.safetensors",
        "round-00004.safetensors",
    ]  # 5 is no multiple of 2; keep_last 2 kept 2 and 4
    assert {"config.toml", "metrics.jsonl", "summary.json", "accuracy.png"} <= {
        p.name for p in run.iterdir()
    }
    with safe_open(str(run / "model.safetensors"), "np") as fh:
        meta = fh.metadata()
    reloaded = load_config(run / "config.toml")
    assert meta["murmura.round"] == "5" and meta["murmura.run_id"] == run.name
    assert meta["murmura.config_sha256"] == config_sha256(reloaded.model_dump(mode="json"))
    assert meta["murmura.config_sha256"] == config_sha256(s.cfg.model_dump(mode="json"))
    assert meta["murmura.version"] and meta["murmura.strategy"] == "fedavg"
    assert meta["murmura.topology"] == "star"
    summary = _summary(run)
    assert summary["status"] == "complete" and summary["rounds"] == ROUNDS


CASES = {
    "fedadam+anomaly": {
        "strategy": {"name": "fedadam", "server_lr": 0.05},
        "anomaly": {"enabled": True, "threshold": 0.5},
    },
    "scaffold": {"strategy": {"name": "scaffold"}},
    "tree": {"topology": {"kind": "tree", "edges": 2}},
    "p2p": {  # D-PSGD sample streams, a time-varying graph, dropout, peers' DP budgets
        "topology": {
            "kind": "ring",
            "local_steps": 3,
            "time_varying": True,
            "dropout": 0.2,
        },
        "privacy": {"mode": "local", "noise_multiplier": 0.5},
    },
}


def _reference(tmp_path: Path, cfg: Config) -> dict[str, np.ndarray]:
    s = sessions.start(cfg, tmp_path / "full")
    assert s.run().status == "complete"
    return _model(s.run_dir.path)


@pytest.mark.parametrize("case", sorted(CASES))
def test_stopped_then_resumed_equals_an_uninterrupted_run_bitwise(
    tmp_path: Path, case: str
) -> None:
    cfg = _cfg(every=2, **CASES[case])
    expected = _reference(tmp_path, cfg)
    s = sessions.start(cfg, tmp_path / "part")

    def stop_at_3(m: RoundMetrics) -> None:
        if m.round == 3:
            s.request_stop()

    outcome = s.run(stop_at_3)
    run = s.run_dir.path
    assert outcome.status == "interrupted" and outcome.rounds == 3
    summary = _summary(run)
    assert summary["status"] == "interrupted" and summary["resumable_from"] == 3
    assert (run / "checkpoints" / "round-00003.safetensors").exists()  # the stop's own
    assert not _same(_model(run), expected)  # the partial model is round 3's
    again = sessions.resume(run)
    assert again.start_round == 4
    assert again.run().status == "complete"
    assert _same(_model(run), expected)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [1, 2, 3, 4, 5]


def test_a_round_abandoned_midway_resumes_from_the_last_checkpoint(tmp_path: Path) -> None:
    cfg = _cfg(every=2, **CASES["fedadam+anomaly"])
    expected = _reference(tmp_path, cfg)
    s = sessions.start(cfg, tmp_path / "part")
    after_three: dict[str, np.ndarray] = {}

    def abandon_in_4(m: RoundMetrics) -> None:
        if m.round == 3:
            after_three.update({"w": s.exp.simulation.weights.copy()})  # type: ignore[union-attr]
            raise KeyboardInterrupt  # as a second Ctrl-C inside round 4 would

    outcome = s.run(abandon_in_4)
    run = s.run_dir.path
    assert outcome.status == "interrupted" and outcome.rounds == 3
    assert _summary(run)["resumable_from"] == 2
    flat = np.concatenate([v.ravel() for v in _model(run).values()])
    assert np.sort(flat).tobytes() == np.sort(after_three["w"]).tobytes()  # round 3's model
    again = sessions.resume(run)
    assert again.start_round == 3 and [m.round for m in again.run_dir.rounds] == [1, 2]
    again.run()
    assert _same(_model(run), expected)


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_older_one_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _cfg(every=1)
    expected = _reference(tmp_path, cfg)
    s = sessions.start(cfg, tmp_path / "part")
    s.run(lambda m: s.request_stop() if m.round == 3 else None)
    folder = s.run_dir.path / "checkpoints"
    newest = folder / "round-00003.safetensors"
    newest.write_bytes(newest.read_bytes()[:-7])  # cut off
    again = sessions.resume(s.run_dir.path)
    assert again.start_round == 3
    assert (folder / "round-00003.safetensors.damaged").exists()
    assert any("damaged checkpoint" in r.getMessage() for r in caplog.records)
    again.run()
    assert _same(_model(s.run_dir.path), expected)


def test_resume_refuses_a_complete_run_and_a_plain_folder(tmp_path: Path) -> None:
    s = sessions.start(_cfg(every=2), tmp_path)
    s.run()
    with pytest.raises(ConfigError, match="complete"):
        sessions.resume(s.run_dir.path)
    with pytest.raises(ConfigError, match="not a run folder"):
        sessions.resume(tmp_path)


def test_resume_refuses_a_config_changed_since_the_checkpoint(tmp_path: Path) -> None:
    s = sessions.start(_cfg(every=1), tmp_path)
    s.run(lambda m: s.request_stop())
    config = s.run_dir.path / "config.toml"
    config.write_text(config.read_text().replace("lr = 0.1", "lr = 0.2"))
    with pytest.raises(CheckpointError, match="written under another config"):
        sessions.resume(s.run_dir.path)


def test_a_clocked_run_writes_no_checkpoint_and_refuses_to_resume(tmp_path: Path) -> None:
    s = sessions.start(_cfg(every=1, clock={"enabled": True}), tmp_path)

    def stop_after_two(m: RoundMetrics) -> None:
        if m.round == 2:
            s.request_stop()

    outcome = s.run(stop_after_two)
    run = s.run_dir.path
    assert outcome.status == "interrupted" and outcome.rounds == 2
    assert not list((run / "checkpoints").glob("*.safetensors"))
    with pytest.raises(ConfigError, match=r"\[clock\] enabled is not checkpointed"):
        sessions.resume(run)
