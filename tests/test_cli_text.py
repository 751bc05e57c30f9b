"""What the command line shows: help texts survive rich markup, examples cite real files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from murmura.cli import app

ROOT = Path(__file__).resolve().parents[1]


def _commands(cmd: Any, path: str = "murmura") -> Iterator[tuple[str, Any]]:
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():  # typer's own click: duck-typed
        yield from _commands(sub, f"{path} {name}")


def _texts() -> Iterator[tuple[str, str]]:
    for path, cmd in _commands(typer.main.get_command(app)):
        yield path, cmd.help or ""
        for p in cmd.params:
            yield f"{path} {p.name}", getattr(p, "help", None) or ""


def test_no_help_text_loses_words_to_rich_markup() -> None:
    texts = dict(_texts())
    assert len(texts) > 50 and "murmura client partitioner" in texts
    for where, text in texts.items():
        shown = Text.from_markup(text).plain  # what typer's rich help prints
        assert shown == text.replace("\\[", "["), f"{where}: {text!r} shows as {shown!r}"


def test_every_option_has_help_and_no_docstring_leaks() -> None:
    for path, cmd in _commands(typer.main.get_command(app)):
        assert cmd.help and "``" not in cmd.help, f"{path}: {cmd.help!r}"
        for p in cmd.params:
            assert getattr(p, "help", None), f"{path} {p.name} has no help"


def test_help_shows_bracketed_table_names() -> None:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT / "src")}
    code = "from murmura.cli import app; app(prog_name='murmura')"
    out = {
        cmd: subprocess.run(
            [sys.executable, "-c", code, cmd, "--help"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=True,
        ).stdout
        for cmd in ("run", "server")
    }
    assert "(default [run] out_dir)" in out["run"]
    assert "Run config with a [server] table (or a federation config)." in " ".join(
        out["server"].replace("│", " ").split()
    )


def test_an_error_with_brackets_prints_them(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    (tmp_path / "[run]").mkdir()
    cfg = tmp_path / "[run]" / "bad.toml"
    cfg.write_text("[run]\nrounds = 1\n[server]\nport = 1\n")
    res = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path)])
    assert res.exit_code == 2 and f"{cfg}: key 'server'" in res.output, res.output


PATH_RE = re.compile(r"(?<![\w/.-])[\w.-]+(?:/[\w.-]+)+\.[a-z]+\b")


def test_example_configs_cite_only_files_in_the_repository() -> None:
    configs = sorted((ROOT / "examples").glob("*.toml"))
    assert len(configs) >= 8
    cited = {
        (cfg.name, ref)
        for cfg in configs
        for line in cfg.read_text().splitlines()
        if "#" in line
        for ref in PATH_RE.findall(line.split("#", 1)[1])
    }
    assert ("digits-dp.toml", "examples/digits-fedavg.toml") in cited  # the scan finds refs
    missing = [(name, ref) for name, ref in cited if not (ROOT / ref).exists()]
    assert not missing, missing


def test_partitioner_help_names_every_partitioner() -> None:
    from murmura.data.partition import PARTITIONERS

    texts = dict(_texts())
    assert all(name in texts["murmura client partitioner"] for name in PARTITIONERS.names())
