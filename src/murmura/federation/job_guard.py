"""Nothing but configuration crosses the wire: a job may name only what a site has installed.

A run config can name user code as ``"package.module:attr"`` (a task factory, a loader);
on a site's own command line that is the operator's choice, but in a job it would make the
site import whatever module the submitter names. ``check_job_names`` refuses such a string
anywhere in a job, and a task that is not registered, before the site builds anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from murmura.errors import ConfigError

CODE_REF = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_][\w.]*$")
"""A ``"package.module:attr"`` reference: an import, never accepted in a job."""


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def check_job_names(job: Mapping[str, Any]) -> None:
    """Refuse a job (its config as a dict) that names code or an unregistered task."""
    from murmura.tasks import TASKS

    for where, text in _strings(job, ""):
        if CODE_REF.match(text):
            raise ConfigError(
                f"job key {where} = {text!r} names code to import; a job may only name "
                f"tasks, models and loaders installed at the site"
            )
    task = job.get("task", {}).get("name") if isinstance(job.get("task"), Mapping) else None
    if task is not None and task not in TASKS:
        raise ConfigError(
            f"job key task.name = {task!r}: no such task at this site; installed: "
            f"{', '.join(TASKS.names())}"
        )
