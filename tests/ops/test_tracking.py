"""MLflow tracking and the model registry, against a real local MLflow store (SQLite)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from portpool import free_port
from typer.testing import CliRunner

from murmura.cli import app
from murmura.config import config_from_dict
from murmura.errors import ConfigError, LineageError
from murmura.node.role_limits import check_role
from murmura.node.state import StateStore
from murmura.node.tracking import open_tracker
from murmura.ops.lineage import Lineage
from murmura.ops.model_registry import register, verify
from murmura.ops.tracking import flatten, round_values, run_tags, store_uri

runner = CliRunner()

TINY = """
[run]
name = "tiny"
rounds = 3
[partition]
kind = "dirichlet"
num_clients = 6
[client]
epochs = 1
batch_size = 32
lr = 0.05
[strategy]
name = "fedavg"
min_clients = 2
[simulation]
executor = "sequential"
[tracking]
mlflow = true
"""


def tracked_run(folder: Path, *sets: str, store: Path | None = None) -> Path:
    """Run TINY with ``--set``s into ``folder/runs`` (``store`` copied there); the run folder."""
    cfg = folder / "tiny.toml"
    cfg.write_text(TINY)
    runs = folder / "runs"
    if store is not None:
        runs.mkdir()
        shutil.copyfile(store, runs / "mlflow.db")
    args = ["run", str(cfg), "--out", str(runs)] + [a for s in sets for a in ("--set", s)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return max(p for p in runs.iterdir() if p.is_dir() and p.name.startswith("tiny-"))


def lines_of(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_metrics_equal_file(client: Any, mlflow_run_id: str, run_dir: Path) -> None:
    """Every number of every metrics.jsonl line is MLflow's value at step = round, once."""
    lines = lines_of(run_dir)
    assert [x["round"] for x in lines] == [1, 2, 3]
    keys = set().union(*(round_values(x) for x in lines))
    assert {"participants", "train_loss", "test_accuracy", "seconds", "failures"} <= keys
    for key in keys:
        history = client.get_metric_history(mlflow_run_id, key)
        got = sorted((m.step, m.value) for m in history)
        want = [(x["round"], round_values(x)[key]) for x in lines if key in round_values(x)]
        assert got == want, key


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, mlflow_store: Path) -> tuple[Path, Any]:
    """One tiny run tracked to the local store, its model registered as "digits-tiny"."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow")
    run_dir = tracked_run(folder, "tracking.register_as=digits-tiny", store=mlflow_store)
    uri = store_uri(run_dir.parent)
    return run_dir, MlflowClient(tracking_uri=uri, registry_uri=uri)


def _mlflow_run(client: Any, run_dir: Path) -> Any:
    exp = client.get_experiment_by_name("murmura")
    (run,) = client.search_runs([exp.experiment_id], f"tags.`murmura.run_id` = '{run_dir.name}'")
    return run


def test_run_is_tracked_to_the_local_store(tracked: tuple[Path, Any]) -> None:
    run_dir, client = tracked
    assert (run_dir.parent / "mlflow.db").is_file()  # the default store: the run's parent
    run = _mlflow_run(client, run_dir)
    assert run.info.status == "FINISHED"
    assert_metrics_equal_file(client, run.info.run_id, run_dir)
    assert run.data.params["partition.num_clients"] == "6"
    assert run.data.params["strategy.name"] == "fedavg"
    assert run.data.params["tracking.register_as"] == "digits-tiny"
    tags = run.data.tags
    assert tags["murmura.topology"] == "star" and tags["murmura.strategy"] == "fedavg"
    assert tags["murmura.aggregator"] == "weighted_mean" and tags["murmura.privacy"] == "none"
    assert tags["murmura.secure_aggregation"] == "false"
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    want = {"config.toml", "metrics.jsonl", "summary.json", "accuracy.png", "model.safetensors"}
    assert want <= files


def test_registered_version_verifies_and_fails_after_one_byte(tracked: tuple[Path, Any]) -> None:
    run_dir, client = tracked
    uri = store_uri(run_dir.parent)
    got = verify("digits-tiny", "1", uri)
    lineage = got.lineage
    assert lineage.run_id == run_dir.name and lineage.rounds == 3 and lineage.clients == 6
    assert lineage.nodes is None and lineage.audit_head is None and lineage.epsilon is None
    assert lineage.aggregator == "weighted_mean" and lineage.secure_aggregation is False
    assert len(lineage.config_sha256) == 64
    ok = runner.invoke(
        app, ["registry", "verify", "digits-tiny", "1", "--runs", str(run_dir.parent)]
    )
    assert ok.exit_code == 0 and "ok" in ok.output, ok.output
    weights = Path(got.source.removeprefix("file://")) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one byte of the last tensor's values
    weights.write_bytes(bytes(data))
    try:
        with pytest.raises(LineageError, match="the registered weights were changed"):
            verify("digits-tiny", "1", uri)
        bad = runner.invoke(
            app, ["registry", "verify", "digits-tiny", "1", "--runs", str(run_dir.parent)]
        )
        assert bad.exit_code == 1 and "changed" in bad.output, bad.output
    finally:
        data[-1] ^= 0x01
        weights.write_bytes(bytes(data))
    with pytest.raises(LineageError, match="no audit ledger head"):
        verify("digits-tiny", "1", uri, state_dir=run_dir.parent)


def test_version_carries_lineage_tags_and_model_card(tracked: tuple[Path, Any]) -> None:
    run_dir, client = tracked
    mv = client.get_model_version("digits-tiny", "1")
    lineage = Lineage.from_tags(mv.tags)
    summary = json.loads((run_dir / "summary.json").read_text())
    card = Path(mv.source.removeprefix("file://"), "MODEL_CARD.md").read_text()
    assert mv.description == card
    assert "6 simulated clients over 3 rounds" in card
    assert f"central: {summary['final_test_accuracy']:.4f}" in card
    assert "no differential privacy" in card and "Secure aggregation: off" in card
    assert "murmura registry verify digits-tiny VERSION" in card
    assert lineage.weights_sha256 in card


def test_register_cli_adds_a_version_to_the_same_run(tracked: tuple[Path, Any]) -> None:
    run_dir, client = tracked
    result = runner.invoke(app, ["registry", "register", str(run_dir), "--name", "digits-tiny"])
    assert result.exit_code == 0, result.output
    assert "version 2" in result.output
    mv = client.get_model_version("digits-tiny", "2")
    assert mv.run_id == _mlflow_run(client, run_dir).info.run_id  # no second MLflow run
    assert (
        Lineage.from_tags(mv.tags) == verify("digits-tiny", "2", store_uri(run_dir.parent)).lineage
    )


def test_resumed_coordinator_continues_its_mlflow_run(
    tracked: tuple[Path, Any], tmp_path: Path
) -> None:
    """The state keeps the MLflow run id; a restart logs only the rounds MLflow lacks."""
    run_dir, client = tracked
    config = config_from_dict({"run": {"name": "dep"}, "tracking": {"mlflow": True}})
    resolved = config.model_dump(mode="json")
    rows = [{**line, "seconds": 0.5} for line in lines_of(run_dir)]
    state_dir = tmp_path / "state"
    run_path = run_dir.parent / "dep-1"  # the store beside the tracked run's, already made
    run_path.mkdir()

    def completed(state: StateStore, row: dict[str, Any]) -> None:
        state.complete_round("dep-1", row["round"], participants=2, failures=[],
                             checkpoint="x", model_sha256="0" * 64, metrics=row)  # fmt: skip

    state = StateStore(state_dir / "state.sqlite")
    state.open_run("dep", "dep-1", resolved)
    completed(state, rows[0])
    first = open_tracker(state, resolved, run_path, "dep-1")
    assert first is not None
    completed(state, rows[1])  # committed, then the coordinator dies before logging it
    first.stop()
    state.close()

    state = StateStore(state_dir / "state.sqlite")  # the restart
    again = open_tracker(state, resolved, run_path, "dep-1")
    assert again is not None and again.mlflow_run_id == first.mlflow_run_id
    completed(state, rows[2])
    again.log_round(rows[2])
    again.log_round(rows[1])  # offered twice: logged once
    state.close()
    history = client.get_metric_history(again.mlflow_run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [
        (r["round"], r["train_loss"]) for r in rows
    ]


def test_tracking_without_the_extra_says_which_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` sees uninstalled
    with pytest.raises(ConfigError, match=r"pip install 'murmura\[mlflow\]'"):
        config_from_dict({"tracking": {"mlflow": True}})
    config_from_dict({"tracking": {"mlflow": False}})  # off: MLflow is not needed


def test_tracking_settings_without_mlflow_are_refused() -> None:
    with pytest.raises(ConfigError, match="tracking.register_as is set but tracking.mlflow"):
        config_from_dict({"tracking": {"register_as": "m"}})
    cfg = config_from_dict({"topology": {"kind": "ring"}, "tracking": {"mlflow": True}})
    with pytest.raises(
        ConfigError, match=r"\[tracking\] mlflow = true is not applied by murmura peer"
    ):
        check_role("peer", cfg)
    check_role("server", config_from_dict({"tracking": {"mlflow": True}}))


def test_flatten_and_tags_of_a_resolved_config() -> None:
    strategy = {"aggregator": "trimmed_mean", "aggregator_args": {"beta": 0.2}}
    resolved = config_from_dict({"strategy": strategy}).model_dump(mode="json")
    params = flatten(resolved)
    assert params["strategy.aggregator_args.beta"] == "0.2"
    assert params["run.rounds"] == "10" and "privacy.noise_multiplier" not in params  # unset
    assert run_tags(resolved, "r-1")["murmura.aggregator"] == "trimmed_mean"


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["train_loss", "test_accuracy", "epsilon", "note"]),
        st.one_of(st.none(), st.floats(allow_nan=False), st.integers(-5, 5), st.text(max_size=3)),
    )
)
def test_round_values_keeps_every_number_of_a_line(extra: dict[str, Any]) -> None:
    row = {"round": 4, "participants": 3, "failures": [{"node": "a", "reason": "lost"}], **extra}
    got = round_values(row)
    assert "round" not in got and got["participants"] == 3.0 and got["failures"] == 1.0
    for key, value in extra.items():
        if isinstance(value, int | float):
            assert got[key] == float(value)
        else:
            assert key not in got or value in ("inf", "-inf", "nan")


@pytest.mark.slow
@pytest.mark.network
def test_run_is_tracked_to_an_mlflow_server(mlflow_store: Path, tmp_path: Path) -> None:
    """`mlflow server` on 127.0.0.1 (its own process, artifacts served through it): the run
    is tracked there, and its model registered there verifies."""
    from mlflow import MlflowClient

    db = tmp_path / "server.db"
    shutil.copyfile(mlflow_store, db)  # a store already set up: no migration
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{db}", "--workers", "1",
           "--artifacts-destination", str(tmp_path / "served")]  # fmt: skip
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as got:
                    if got.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
            time.sleep(0.5)
        work = tmp_path / "work"
        work.mkdir()
        run_dir = tracked_run(work, f"tracking.tracking_uri={uri}")
        assert not (run_dir.parent / "mlflow.db").exists()  # nothing local
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("murmura")
        (run,) = client.search_runs(
            [exp.experiment_id], f"tags.`murmura.run_id` = '{run_dir.name}'"
        )
        assert_metrics_equal_file(client, run.info.run_id, run_dir)
        assert "model.safetensors" in {a.path for a in client.list_artifacts(run.info.run_id)}
        assert list((tmp_path / "served").rglob("model.safetensors"))  # stored by the server
        got = register(run_dir, "digits-served", uri)  # the config's tracking_uri by default
        assert verify("digits-served", got.version, uri).lineage == got.lineage
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
