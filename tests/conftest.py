"""Suite-wide settings: one torch thread per process, and reproducible property tests.

Test models are tiny; with several test processes on two cores, idle OpenMP threads spinning
for work cost far more than they give.

Hypothesis draws the same examples on every run (profile "repro"), so `make test` passes or
fails the same way on every machine; `HYPOTHESIS_PROFILE=explore` draws fresh random examples
to hunt for new counterexamples.

Under ``pytest -n`` (``make test``: ``--dist loadfile --no-loadscope-reorder``) the files with
process-level tests (marked ``slow``) are handed out first, so the long ones overlap from the
start and the short ones fill in behind them, instead of a few long ones running alone at the end.

``mlflow_store``: an MLflow store set up once for the tracking tests.
"""

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

torch.set_num_threads(1)

settings.register_profile("repro", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repro"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with a ``slow`` test first, each file's tests and the rest in their order."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, its tables made once per session (MLflow's migrations
    take seconds); a test copies it to where a run's default store goes."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path
