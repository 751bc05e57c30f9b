"""A command imports only what it runs: no torch or scikit-learn to print help or list tasks.

Behavioural, not timed: each check runs a fresh interpreter and reads ``sys.modules``.
Start-up times are measured by benchmarks/bench_startup.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from murmura.errors import RegistryError
from murmura.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sklearn", "scipy", "matplotlib", "dp_accounting", "networkx", "grpc", "ray")


def _loaded_after(code: str) -> list[str]:
    """The HEAVY libraries in ``sys.modules`` after a fresh interpreter runs ``code``."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout
    loaded: list[str] = json.loads(out.strip().splitlines()[-1])
    return loaded


def _command(*args: str) -> str:
    return (
        "from murmura.cli import app\n"
        f"app({list(args)!r}, prog_name='murmura', standalone_mode=False)"
    )


@pytest.mark.parametrize("args", [("--help",), ("tasks",), ("run", "--help"), ("keys", "--help")])
def test_cli_commands_that_train_nothing_import_no_heavy_library(args: tuple[str, ...]) -> None:
    assert _loaded_after(_command(*args)) == []


def test_loading_a_config_imports_no_strategy_or_task_implementation() -> None:
    for example in ("digits-fedavg.toml", "digits-dp.toml"):
        path = str(ROOT / "examples" / example)
        code = f"from murmura.config import load_config\nload_config({path!r})"
        assert not {"torch", "sklearn"} & set(_loaded_after(code)), example


def test_the_documented_imports_still_work() -> None:
    import murmura.strategy
    from murmura.strategy import STRATEGIES, FedAvg, FedOpt, Scaffold, ScaffoldClient, Strategy
    from murmura.strategy.fedavg import FedAvg as DefinedFedAvg
    from murmura.tasks import TASKS, DigitsTask, SyntheticTask, Task, evaluate_classifier

    assert FedAvg is DefinedFedAvg and issubclass(FedOpt, FedAvg) and issubclass(Scaffold, FedAvg)
    assert callable(ScaffoldClient) and callable(evaluate_classifier) and Strategy and Task
    assert isinstance(STRATEGIES.get("fedavg")(fraction=0.5), FedAvg)
    assert TASKS.get("digits") is DigitsTask and TASKS.get("synthetic") is SyntheticTask
    assert "FedAvg" in dir(murmura.strategy)
    with pytest.raises(AttributeError, match="no attribute 'FedAvgg'"):
        murmura.strategy.FedAvgg  # noqa: B018


def test_a_lazy_registry_lists_and_checks_names_without_importing() -> None:
    reg: Registry[object] = Registry("widget")
    reg.register_lazy("ghost", "murmura_no_such_package.widgets:Ghost", summary="Never built.")
    reg.register("real")(int)
    assert reg.names() == ["ghost", "real"] and "ghost" in reg
    reg.check("ghost")
    assert reg.summary("ghost") == "Never built."
    with pytest.raises(RegistryError, match="unknown widget 'gost'; valid: ghost, real"):
        reg.check("gost")
    with pytest.raises(RegistryError, match="already registered"):
        reg.register_lazy("real", "builtins:int")
    with pytest.raises(ModuleNotFoundError):
        reg.get("ghost")  # imported only now


def test_a_lazy_entry_resolves_once_to_its_object() -> None:
    reg: Registry[object] = Registry("widget")
    reg.register_lazy("path", "pathlib:Path")
    assert reg.get("path") is Path and reg.get("path") is Path
    assert reg.summary("path") == (Path.__doc__ or "").strip().splitlines()[0]


def test_task_summaries_are_their_docstrings() -> None:
    from murmura.tasks import TASKS

    for name in TASKS.names():
        doc = (TASKS.get(name).__doc__ or "").strip().splitlines()[0]
        assert TASKS.summary(name) == doc, name
