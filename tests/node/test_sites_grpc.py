"""Three ``murmura client --site`` processes over mTLS, one with a broken file (evidence).

Uses ``examples/predictive-maintenance`` (``make_data.write`` and ``run_sites.launch``): each
plant reads only its own CSV; plant-c's has the text 'fault' in a numeric column at data row
42. The job goes on with plant-a and plant-b; the coordinator lists plant-c every round with
the reason, which names the file, column and row but carries no value from the data. The
job standardises (``[stats] standardise``): both sites apply the scaling fitted from the
statistics their two answers make.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from portpool import free_port

from murmura.analytics.fit_scaling import deployed_scaling
from murmura.analytics.standardise import STANDARDISE_KEY, scaling_from_json
from murmura.config import load_config

pytestmark = [pytest.mark.slow, pytest.mark.network]

EXAMPLE = Path(__file__).parents[2] / "examples" / "predictive-maintenance"
ROUNDS = 2


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_site_with_a_broken_file_is_refused_and_the_others_finish(tmp_path: Path) -> None:
    data, sites = tmp_path / "data", _module("run_sites")
    _module("make_data").write(data, 0, broken="plant-c")
    port = free_port()
    procs = sites.launch(tmp_path, sites.setup(tmp_path, port, data), port, rounds=ROUNDS)
    try:
        assert procs[0].wait(240) == 0, (tmp_path / "coordinator.log").read_text()
        assert all(p.wait(30) == 0 for p in procs[1:])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    state = tmp_path / "state"
    run = state / "runs" / (state / "latest").read_text().strip()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [1, 2]
    reason = "site plant-c: plant-c.csv: column 'torque', row 42: a value is not a number"
    for line in lines:
        assert line["participants"] == 2
        fit, evaluate = line["failures"]  # it answers both phases with the reason
        assert evaluate["reason"].startswith("evaluate: ")
        for failure in (fit, evaluate):
            assert failure["node"] == "plant-c" and reason in failure["reason"]
            assert "fault" not in failure["reason"] and str(data) not in failure["reason"]
    assert json.loads((run / "summary.json").read_text())["final_federated_clients"] == 2
    for plant in ("plant-a", "plant-b"):
        assert f"{plant}: {ROUNDS} rounds trained" in (tmp_path / f"{plant}.log").read_text()
    stats = json.loads((run / "stats.json").read_text())  # [stats] standardise: the two
    assert stats["sites"] == 2 and "plant-c" in stats["failures"]  # sites' sums, fitted on
    fitted = deployed_scaling(load_config(EXAMPLE / "config.toml"), run)
    scaling = scaling_from_json(fitted[STANDARDISE_KEY])
    for plant in ("plant-a", "plant-b"):  # and applied by both
        said = f"with the federation's mean {scaling['mean']} and scale {scaling['scale']}"
        assert said in (tmp_path / f"{plant}.log").read_text()
    local = (tmp_path / "plant-c.log").read_text()  # the full message stays at the site
    assert "column 'torque', row 42: 'fault' is not a number" in local
    assert "plant-c: 0 rounds trained" in local
