"""``murmura client`` refuses a missing or doubled choice of data before it dials anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from murmura.node.cli import app


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "give --partition i/n or --site SITE.toml"),
        (["--partition", "0/2", "--site", "s.toml"], "give --partition i/n or --site SITE.toml"),
        (["--site", "s.toml", "--insecure"], "--site with --insecure needs --name"),
        (["--site", "s.toml", "--task", "digits"], "a standing site takes its jobs' configs"),
        (["--partition", "0/2", "--standing", "--insecure"], "--standing with --insecure needs"),
        (
            ["--site", "s.toml", "--config", "j.toml", "--seed", "4", "--task", "digits"],
            "--task, --seed: the job config decides these",
        ),
        (
            ["--partition", "0/2", "--config", "j.toml", "--eval-fraction", "0.2"],
            "--eval-fraction: the job config decides these",
        ),
    ],
)
def test_client_needs_exactly_one_source_of_data(
    args: list[str], says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text('[data]\npath = "x.csv"\n')
    result = CliRunner().invoke(app, ["client", "--server", "127.0.0.1:1", *args])
    assert result.exit_code == 2
    assert says in " ".join(result.output.split())
