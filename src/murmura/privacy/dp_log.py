"""Keeping dp-accounting's expected "failed to converge" warnings out of the user's terminal.

RDP accounting evaluates epsilon over a grid of Renyi orders. For some orders (small ones, at
large sample rates and small noise) dp-accounting's series does not converge within its
iteration limit: it logs one absl warning per order and leaves that order out, which keeps
epsilon a sound bound (the minimum over the other orders). ``murmura privacy plan`` tries
dozens of noise multipliers, so about twenty such lines preceded its answer.

``quiet_convergence_warnings()`` drops exactly those records, from the ``absl`` logger only,
and only while its block runs; every other absl message (a negative Renyi divergence, for
one) still gets through. How many it dropped is logged at DEBUG.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

ABSL_LOGGER = "absl"
"""The logger absl's ``logging.warning`` writes to."""
EXPECTED = "failed to converge"
"""What dp-accounting says when it leaves an RDP order out."""


class ConvergenceFilter(logging.Filter):
    """Drops dp-accounting's "failed to converge" records and counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for an expected non-convergence warning, True for anything else."""
        if EXPECTED in str(record.msg):
            self.dropped += 1
            return False
        return True


@contextmanager
def quiet_convergence_warnings() -> Iterator[ConvergenceFilter]:
    """Drop dp-accounting's "failed to converge" warnings while the block runs."""
    logger = logging.getLogger(ABSL_LOGGER)
    quiet = ConvergenceFilter()
    logger.addFilter(quiet)
    try:
        yield quiet
    finally:
        logger.removeFilter(quiet)
        if quiet.dropped:
            log.debug("dp-accounting: %d RDP orders did not converge, left out", quiet.dropped)
