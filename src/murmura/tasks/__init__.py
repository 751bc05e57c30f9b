"""Built-in tasks and the loader for user tasks named ``"package.module:factory"``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from murmura.errors import ConfigError
from murmura.registry import Registry
from murmura.tasks.base import Task, evaluate_classifier
from murmura.tasks.digits import DigitsTask
from murmura.tasks.synthetic import SyntheticTask

TASKS: Registry[Callable[..., Task]] = Registry("task")
TASKS.register("digits")(DigitsTask)
TASKS.register("synthetic")(SyntheticTask)


def load_task(name: str, **args: Any) -> Task:
    """A built-in task by name, or a user task from ``"package.module:factory"``."""
    if ":" not in name:
        return TASKS.get(name)(**args)
    module_name, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"task {name!r} cannot be loaded: {exc}") from exc
    task: Task = factory(**args)
    return task


__all__ = ["TASKS", "DigitsTask", "SyntheticTask", "Task", "evaluate_classifier", "load_task"]
