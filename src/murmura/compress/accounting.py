"""Bytes of one round on the wire: per node (mean, max) and in total, up and down.

Counted as the payload of the model and update buffers (codec header included; the gRPC,
protobuf and TLS framing around them excluded): ``4 d`` bytes for a float32 vector of ``d``
values, ``framed_size`` for a compressed one. The simulation computes these figures and the
deployment would count the same buffers, so the two agree for the same round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

FLOAT32_BYTES = 4
BYTES_UP = "bytes_up"
"""The ``FitRes.metrics`` key of the bytes an update took on the wire (set by the receiver
over gRPC, by the ``CompressedLearner`` in simulation)."""
BYTES_DOWN = "bytes_down"
"""The ``FitRes.metrics`` key of the bytes the model took to a client with a compressed
downlink (``murmura.compress.downlink``); without it, ``4 d``."""


def dense_bytes(size: int) -> int:
    """Bytes of a float32 vector of ``size`` values."""
    return FLOAT32_BYTES * size


def round_bytes(up: Sequence[float], down: Sequence[float]) -> dict[str, float]:
    """``bytes_{up,down}_{mean,max,total}`` of one round's per-node byte counts."""
    out: dict[str, float] = {}
    for side, counts in (("up", up), ("down", down)):
        total = float(sum(counts))
        out[f"bytes_{side}_mean"] = total / len(counts) if counts else 0.0
        out[f"bytes_{side}_max"] = float(max(counts)) if counts else 0.0
        out[f"bytes_{side}_total"] = total
    return out


def uplink_counts(metrics: Sequence[Mapping[str, float]], size: int) -> list[float]:
    """Each accepted update's ``bytes_up`` metric, or ``4 size`` for an uncompressed one."""
    return [float(m.get(BYTES_UP, dense_bytes(size))) for m in metrics]


def downlink_counts(metrics: Sequence[Mapping[str, float]], size: int, cohort: int) -> list[float]:
    """The model's bytes to each of ``cohort`` nodes.

    ``bytes_down`` of the accepted results, ``4 size`` for the others (and for every node
    without a compressed downlink).
    """
    counted = [float(m.get(BYTES_DOWN, dense_bytes(size))) for m in metrics]
    return counted + [float(dense_bytes(size))] * max(cohort - len(counted), 0)
