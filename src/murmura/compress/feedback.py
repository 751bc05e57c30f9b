"""Error feedback: the sender keeps what its codec dropped and adds it to the next vector.

``p = x + e; send C(p); e = p - decode(C(p))`` (Stich et al. 2018, "Sparsified SGD with
Memory"; Karimireddy et al. 2019, "Error Feedback Fixes SignSGD"). The residual ``e`` lives
with the sender (a client, a peer), never on the wire.
"""

from __future__ import annotations

import numpy as np

from murmura.compress.base import Codec
from murmura.types import Vector


class ErrorFeedback:
    """A codec with the sender's residual; ``encode`` adds it in and keeps the new one."""

    def __init__(self, codec: Codec, size: int) -> None:
        self.codec = codec
        self.residual: Vector = np.zeros(size, dtype=np.float32)

    def encode(self, x: Vector, rng: np.random.Generator) -> tuple[bytes, Vector]:
        """The payload of ``x + residual`` and what the receiver will decode from it."""
        corrected = np.asarray(x, dtype=np.float32) + self.residual
        payload = self.codec.encode(corrected, rng)
        decoded = self.codec.decode(payload, corrected.size)
        self.residual = (corrected - decoded).astype(np.float32)
        return payload, decoded

    def state_dict(self) -> dict[str, Vector]:
        """The residual, to save with the sender's state."""
        return {"residual": self.residual.copy()}

    def load_state_dict(self, state: dict[str, Vector]) -> None:
        """Restore a residual of the same size; refuse another."""
        residual = np.asarray(state["residual"], dtype=np.float32)
        if residual.shape != self.residual.shape:
            raise ValueError(
                f"error feedback residual of shape {residual.shape}, "
                f"this sender needs {self.residual.shape}"
            )
        self.residual = residual.copy()
