"""A name -> object registry for every plug-in kind (aggregator, strategy, task, ...).

A plug-in is registered either as an object or as a ``"package.module:attr"`` string that is
imported on first use, so that listing or checking names never imports an implementation (and
its dependencies: torch, scikit-learn) that the command at hand does not run.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from murmura.errors import RegistryError

T = TypeVar("T")


def resolve(target: str) -> Any:
    """The object that ``"package.module:attr"`` names, importing the module."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise RegistryError(f"{target!r} is not of the form 'package.module:attr'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def resolve_user(target: str) -> Any:
    """``resolve`` for user code named in a config: the current directory is importable too.

    A console script (``murmura``) does not put the working directory on ``sys.path`` the way
    ``python -m`` does, so a task or loader module next to the config would not import.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    return resolve(target)


class Registry(Generic[T]):
    """Named plug-ins of one kind; an unknown name raises an error listing the valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        self._summaries: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def add(obj: T) -> T:
            self._claim(name)
            self._items[name] = obj
            return obj

        return add

    def register_lazy(self, name: str, target: str, summary: str = "") -> None:
        """Register ``"package.module:attr"`` under ``name``; it is imported on first ``get``.

        ``summary`` is the one line that ``summary(name)`` gives without importing it.
        """
        self._claim(name)
        self._lazy[name] = target
        if summary:
            self._summaries[name] = summary

    def _claim(self, name: str) -> None:
        if name in self:
            raise RegistryError(f"{self.kind} {name!r} is already registered")

    def get(self, name: str) -> T:
        """Return the plug-in called ``name`` (importing it if it was registered lazily)."""
        if name not in self._items:
            self.check(name)
            obj: T = resolve(self._lazy[name])
            self._items[name] = obj
        return self._items[name]

    def check(self, name: str) -> None:
        """Raise the unknown-name error if ``name`` is not registered; imports nothing."""
        if name not in self:
            valid = ", ".join(self.names())
            raise RegistryError(f"unknown {self.kind} {name!r}; valid: {valid}")

    def summary(self, name: str) -> str:
        """One line describing ``name``: the registered summary, else its docstring's first."""
        if name in self._summaries:
            return self._summaries[name]
        lines = (self.get(name).__doc__ or "").strip().splitlines()
        return lines[0] if lines else ""

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items.keys() | self._lazy.keys())

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
