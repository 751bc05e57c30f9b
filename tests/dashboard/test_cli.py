"""``murmura dashboard`` refuses what it cannot serve safely, and names the missing extra."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from murmura.cli import app


def test_without_the_extra_it_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    result = CliRunner().invoke(app, ["dashboard"])
    assert result.exit_code == 2
    assert "needs uvicorn: pip install 'murmura[dashboard]'" in result.output


def test_a_remote_host_is_refused_without_allow_remote() -> None:
    result = CliRunner().invoke(app, ["dashboard", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "--host 0.0.0.0 is not loopback" in result.output


def test_a_missing_state_dir_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["dashboard", "--state", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "nope: no such directory" in result.output
