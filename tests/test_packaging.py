"""The package metadata: an SPDX licence (PEP 639), built without a deprecation warning."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_string_with_its_file() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    for name in project["license-files"]:
        assert "Apache License" in (ROOT / name).read_text()


def test_metadata_builds_without_warnings(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(
        ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    (tmp_path / "meta").mkdir()
    code = (
        "from setuptools import build_meta as b; print(b.prepare_metadata_for_build_wheel('meta'))"
    )
    res = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Warning" not in res.stderr
    meta = (tmp_path / "meta" / res.stdout.split()[-1] / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in meta and "License-File: LICENSE" in meta
