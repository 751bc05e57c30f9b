"""Update validation: a chain of small checks run on every update before aggregation.

Each check raises ``UpdateRejected`` naming the node, the round and the offending value; the
runtime logs it, lists the node among the round's failures and goes on. A client's evaluation
result (federated evaluation) passes ``validate_evaluation`` the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from murmura.aggregate.steps import LOCAL_STEPS, MAX_LOCAL_STEPS
from murmura.errors import UpdateRejected
from murmura.types import EvaluateRes, FitRes

Check = Callable[[str, int, FitRes], None]
MAX_METRICS = 256
"""Most metrics one result may carry (training or evaluation)."""


def is_float32_vector() -> Check:
    """The update is a 1-D float32 numpy array."""

    def check(node: str, round_: int, res: FitRes) -> None:
        u = res.update
        if not isinstance(u, np.ndarray) or u.dtype != np.float32 or u.ndim != 1:
            got = f"{type(u).__name__} {getattr(u, 'dtype', '?')} ndim={getattr(u, 'ndim', '?')}"
            raise UpdateRejected(node, round_, f"update must be a 1-D float32 array, got {got}")

    return check


def shape_matches(dim: int) -> Check:
    """The update has exactly ``dim`` entries (the model's layout size)."""

    def check(node: str, round_: int, res: FitRes) -> None:
        if res.update.shape != (dim,):
            raise UpdateRejected(
                node, round_, f"update has shape {res.update.shape}, expected ({dim},)"
            )

    return check


def finite() -> Check:
    """No NaN or infinity in the update."""

    def check(node: str, round_: int, res: FitRes) -> None:
        if not np.isfinite(res.update).all():
            bad = int(np.count_nonzero(~np.isfinite(res.update)))
            raise UpdateRejected(node, round_, f"update has {bad} non-finite values (NaN/Inf)")

    return check


def norm_at_most(bound: float) -> Check:
    """The update's L2 norm is at most ``bound``."""

    def check(node: str, round_: int, res: FitRes) -> None:
        norm = float(np.linalg.norm(res.update))
        if norm > bound:
            raise UpdateRejected(node, round_, f"update norm {norm:.4g} exceeds bound {bound:.4g}")

    return check


def num_examples_between(low: int, high: int) -> Check:
    """The claimed example count lies in ``[low, high]``."""

    def check(node: str, round_: int, res: FitRes) -> None:
        n = res.num_examples
        if not isinstance(n, int | np.integer) or not low <= n <= high:
            raise UpdateRejected(
                node, round_, f"num_examples {n!r} outside the allowed range [{low}, {high}]"
            )

    return check


def local_steps_valid() -> Check:
    """A reported step count (``local_steps``, FedNova's ``tau_i``) is an integer in range.

    ``[0, MAX_LOCAL_STEPS]``: a client with no examples takes no step. Absent is allowed
    (``murmura.strategy.steps`` leaves such an update out when it normalises).
    """

    def check(node: str, round_: int, res: FitRes) -> None:
        if LOCAL_STEPS not in res.metrics:
            return
        v = res.metrics[LOCAL_STEPS]
        if not _finite_number(v) or float(v) != int(v) or not 0 <= v <= MAX_LOCAL_STEPS:
            raise UpdateRejected(
                node,
                round_,
                f"{LOCAL_STEPS} {v!r} is not an integer in [0, {MAX_LOCAL_STEPS}]",
            )

    return check


def default_checks(dim: int, max_examples: int = 2**31 - 1) -> list[Check]:
    """The checks every update passes: type, shape, finiteness, a sane example count."""
    return [
        is_float32_vector(),
        shape_matches(dim),
        finite(),
        num_examples_between(0, max_examples),
        local_steps_valid(),
    ]


def validate(node: str, round_: int, res: FitRes, checks: Sequence[Check]) -> None:
    """Run ``checks`` in order; the first failure raises ``UpdateRejected``."""
    for check in checks:
        check(node, round_, res)


def validate_evaluation(
    node: str, round_: int, res: EvaluateRes, max_examples: int = 2**31 - 1
) -> None:
    """An evaluation result is sane: a count in range, a finite loss, few and finite metrics."""
    n = res.num_examples
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 0 <= n <= max_examples:
        raise UpdateRejected(
            node, round_, f"num_examples {n!r} outside the allowed range [0, {max_examples}]"
        )
    if not _finite_number(res.loss):
        raise UpdateRejected(node, round_, f"evaluation loss {res.loss!r} is not a finite number")
    if len(res.metrics) > MAX_METRICS:
        raise UpdateRejected(node, round_, f"{len(res.metrics)} metrics (limit {MAX_METRICS})")
    bad = sorted(str(k) for k, v in res.metrics.items() if not _finite_number(v))
    if bad:
        raise UpdateRejected(node, round_, f"metrics {bad} are not finite numbers")


def _finite_number(value: object) -> bool:
    """A real, finite int or float (not a bool, a string or NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return False
    return math.isfinite(float(value))
