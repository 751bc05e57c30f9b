"""Errors of the secure aggregation protocol."""

from __future__ import annotations

from murmura.errors import MurmuraError


class SecAggAbort(MurmuraError):
    """A secure aggregation round stopped without revealing anything.

    Raised when too few clients of some neighbourhood survive to reconstruct the secrets the
    server needs (Bonawitz et al. 2017, Bell et al. 2020), or when a message breaks the
    protocol in a way that makes continuing unsafe. The server raises it *before* it
    reconstructs any secret, so an aborted round leaks no client's input.
    """

    def __init__(self, stage: str, round_: int, reason: str) -> None:
        super().__init__(
            f"secure aggregation aborted in round {round_} at stage {stage!r}: {reason}"
        )
        self.stage = stage
        self.round = round_
        self.reason = reason
