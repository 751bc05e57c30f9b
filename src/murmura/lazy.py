"""Package attributes that are imported from their submodule on first use (PEP 562).

A package ``__init__`` that re-exports its classes would import every submodule, and with
them torch or scikit-learn, as soon as anything in the package is imported. With
``lazy_exports`` the public names stay where the documentation says (``from murmura.strategy
import FedAvg``) and each is imported when it is first looked up.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose ``name`` lives in ``exports[name]``."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # looked up once
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
