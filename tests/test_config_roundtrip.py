"""A run folder's ``config.toml`` (every key, resolved) loads again to the same config.

``murmura run --resume``, the registry's lineage and the dashboard read it back, so a
validator that refuses a key merely for being written out (at its default) breaks them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from murmura.config import config_from_dict, load_config
from murmura.ops.run_dir import write_config

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))
EXTRA: dict[str, dict[str, Any]] = {
    "clock-sync": {"clock": {"enabled": True, "deadline_s": 50.0, "over_selection": 1.5}},
    "clock-async": {"clock": {"enabled": True, "mode": "async", "buffer_size": 3}},
    "compression": {"compression": {"uplink": "topk", "args": {"ratio": 0.1}}},
    "stats": {"stats": {"enabled": True, "bins": 4}},
}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_reloads_from_its_resolved_config(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    write_config(tmp_path, cfg.model_dump(mode="json"))
    assert load_config(tmp_path / "config.toml") == cfg


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_sections_reload_from_their_resolved_config(name: str, tmp_path: Path) -> None:
    cfg = config_from_dict({"partition": {"num_clients": 10}, **EXTRA[name]})
    write_config(tmp_path, cfg.model_dump(mode="json"))
    assert load_config(tmp_path / "config.toml") == cfg
