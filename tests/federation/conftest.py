"""Real job configs for the site policy and budget tests (session fixtures: pure helpers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dp_accounting
import pytest
from dp_accounting import rdp

from murmura.config import Config, config_from_dict

SCHEMA = {"label": "y", "classes": [0, 1], "features": ["a", "b", "c"]}


def make_job(**sections: dict[str, Any]) -> Config:
    """A small tabular files job (a site's kind of job), with ``sections`` merged in."""
    base: dict[str, Any] = {
        "run": {"rounds": 5, "seed": 1},
        "task": {"name": "tabular", "args": {"model": "linear", "schema": SCHEMA}},
        "partition": {"kind": "files", "path": "data", "num_clients": 3},
        "client": {"epochs": 1},
        "evaluation": {"central": False},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return config_from_dict(base)


def dp_epsilon(mechanisms: list[tuple[float, float, int]], delta: float) -> float:
    """dp-accounting's own RDP epsilon of these (z, q, steps) composed, without murmura."""
    acc = rdp.RdpAccountant()
    for z, q, n in mechanisms:
        event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
        acc.compose(dp_accounting.SelfComposedDpEvent(event, n))
    return float(acc.get_epsilon(delta))


@pytest.fixture(scope="session")
def job() -> Callable[..., Config]:
    """``make_job``: a small tabular files job."""
    return make_job


@pytest.fixture(scope="session")
def reference_epsilon() -> Callable[[list[tuple[float, float, int]], float], float]:
    """``dp_epsilon``: dp-accounting's RDP epsilon, computed without murmura."""
    return dp_epsilon
