import json
from pathlib import Path

from safetensors.numpy import load_file
from typer.testing import CliRunner

from murmura import __version__
from murmura.cli import app

runner = CliRunner()


def test_run_writes_the_run_directory(tmp_path: Path) -> None:
    cfg = tmp_path / "small.toml"
    cfg.write_text(
        '[run]\nname = "small"\nrounds = 2\n[partition]\nkind = "iid"\nnum_clients = 5\n'
        '[client]\nlr = 0.1\n[simulation]\nexecutor = "sequential"\n'
    )
    result = runner.invoke(
        app,
        ["run", str(cfg), "--out", str(tmp_path / "runs"), "--set", "run.rounds=3"]
        + ["--set", "stats.enabled=true", "--set", "stats.high=4"],
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("small-")
    assert {p.name for p in run_dir.iterdir()} >= {
        "config.toml",
        "metrics.jsonl",
        "accuracy.png",
        "model.safetensors",
        "summary.json",
        "stats.json",
        "label_histograms.json",
        "label_share.png",
    }
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [1, 2, 3]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_test_accuracy"] == lines[-1]["test_accuracy"] > 0.5
    tensors = load_file(str(run_dir / "model.safetensors"))
    assert tensors["0.weight"].shape == (64, 64) and tensors["2.bias"].shape == (10,)
    per_site = json.loads((run_dir / "label_histograms.json").read_text())
    stats = json.loads((run_dir / "stats.json").read_text())
    assert len(per_site) == 5 and sum(map(sum, per_site.values())) == stats["count"] > 1000
    assert "rounds = 3" in (run_dir / "config.toml").read_text()
    assert "final test accuracy" in result.output and str(run_dir) in result.output.replace(
        "\n", ""
    )


def test_bad_config_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[partition]\nalpha = 0\n")
    result = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "partition.alpha" in result.output and "greater than 0" in result.output
    assert not any(tmp_path.glob("murmura-*"))


def test_tasks_and_version() -> None:
    out = runner.invoke(app, ["tasks"]).output
    assert "digits" in out and "synthetic" in out
    assert __version__ in runner.invoke(app, ["--version"]).output


def test_run_with_json_logs_prints_one_object_per_line(tmp_path: Path) -> None:
    cfg = tmp_path / "small.toml"
    cfg.write_text(
        '[run]\nname = "small"\nrounds = 2\n[partition]\nnum_clients = 3\n'
        '[simulation]\nexecutor = "sequential"\n'
    )
    out = tmp_path / "runs"
    result = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--log-format", "json"])
    assert result.exit_code == 0, result.output
    said = [json.loads(x) for x in result.output.splitlines()]  # no bar, no other text
    (run_dir,) = out.iterdir()
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rounds = [x for x in said if x["event"] == "round"]
    assert [(x["round"], x["train_loss"]) for x in rounds] == [
        (m["round"], m["train_loss"]) for m in metrics
    ]
    assert {x["run"] for x in said} == {run_dir.name} and {x["node"] for x in said} == {
        "simulation"
    }
    assert said[-1]["event"] == "finished" and said[-1]["path"] == str(run_dir)
    assert said[-1]["final_test_accuracy"] == metrics[-1]["test_accuracy"]
