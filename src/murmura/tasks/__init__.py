"""Built-in tasks and the loader for user tasks named ``"package.module:factory"``.

A task's module (and with it torch and scikit-learn) is imported when the task is loaded, not
when its name is listed or checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from murmura.errors import ConfigError, RegistryError
from murmura.lazy import lazy_exports
from murmura.registry import Registry, resolve_user

if TYPE_CHECKING:
    from murmura.tasks.base import Task, evaluate_classifier
    from murmura.tasks.digits import DigitsTask
    from murmura.tasks.synthetic import SyntheticTask

TASKS: Registry[Callable[..., Task]] = Registry("task")
TASKS.register_lazy(
    "digits",
    "murmura.tasks.digits:DigitsTask",
    summary="Handwritten digits, 64 features, 10 classes; ships with scikit-learn (no download).",
)
TASKS.register_lazy(
    "tabular",
    "murmura.tasks.tabular:TabularTask",
    summary="Tabular data from CSV/Parquet/.npz files: softmax regression or an MLP.",
)
TASKS.register_lazy(
    "image",
    "murmura.tasks.image:ImageTask",
    summary="Images from class folders or .npz files: a two-layer CNN with GroupNorm.",
)
TASKS.register_lazy(
    "synthetic",
    "murmura.tasks.synthetic:SyntheticTask",
    summary="Multinomial logistic regression (60 -> 10) on Synthetic(alpha, beta).",
)


def load_task(name: str, **args: Any) -> Task:
    """A built-in task by name, or a user task from ``"package.module:factory"``."""
    if ":" not in name:
        return TASKS.get(name)(**args)
    try:
        factory = resolve_user(name)
    except (ImportError, AttributeError, RegistryError) as exc:
        raise ConfigError(f"task {name!r} cannot be loaded: {exc}") from exc
    task: Task = factory(**args)
    return task


__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DigitsTask": "murmura.tasks.digits",
        "SyntheticTask": "murmura.tasks.synthetic",
        "Task": "murmura.tasks.base",
        "evaluate_classifier": "murmura.tasks.base",
    },
)

__all__ = ["TASKS", "DigitsTask", "SyntheticTask", "Task", "evaluate_classifier", "load_task"]
