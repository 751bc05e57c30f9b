"""Staleness functions: how much an update computed on an old model counts.

Xie et al. 2019 (FedAsync, section 5.2): constant, polynomial ``(1 + s)^-a`` and hinge
``1 if s <= b else 1 / (a (s - b) + 1)``; Nguyen et al. 2022 (FedBuff) use ``(1 + s)^-1/2``.
Every function is 1 at ``s = 0``, never increases and stays in ``(0, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable

Staleness = Callable[[int], float]


def constant(s: int) -> float:
    """Every update counts fully."""
    _check(s)
    return 1.0


def polynomial(a: float) -> Staleness:
    """``(1 + s)^-a``."""

    def weight(s: int) -> float:
        _check(s)
        return float((1.0 + s) ** -a)

    return weight


def hinge(a: float, b: float) -> Staleness:
    """1 up to staleness ``b``, then ``1 / (a (s - b) + 1)``."""

    def weight(s: int) -> float:
        _check(s)
        return 1.0 if s <= b else 1.0 / (a * (s - b) + 1.0)

    return weight


def make_staleness(kind: str, a: float, b: float) -> Staleness:
    """The staleness function ``kind`` names (constant, polynomial, hinge)."""
    if kind == "constant":
        return constant
    if kind == "polynomial":
        return polynomial(a)
    if kind == "hinge":
        return hinge(a, b)
    raise ValueError(f"unknown staleness function {kind!r}: constant, polynomial, hinge")


def _check(s: int) -> None:
    if s < 0:
        raise ValueError(f"staleness must be >= 0, got {s}")
