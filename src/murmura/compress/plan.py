"""Bandwidth planning: the bytes and wire time of a round, from the config alone.

Byte counts are those of ``murmura.compress.accounting`` (what metrics.jsonl reports): a
float32 model down to every sampled node, the uplink codec's framed update (or float32) up;
in P2P, each peer's model (or CHOCO-gossip difference) to each neighbour.
Wire time assumes every node has ``uplink`` / ``downlink`` bits per second and ``latency``
one way; a transfer of ``b`` bytes that a sender sends to ``k`` receivers takes
``latency + max(k b / uplink, b / downlink)``, and the fan-in of ``k`` updates
``latency + max(b / uplink, k b / downlink)``: the slower end sets the pace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


def parse_rate(text: str) -> float:
    """Bits per second of ``"10Mbit"``, ``"50mbps"``, ``"1Gbit"``, ``"800kbit"``, ``"1e6"``."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgG]?)(bit|bps|b/s|)\s*", text)
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"rate {text!r}: expected a positive number of bits/s, e.g. 10Mbit")
    return float(m.group(1)) * UNITS[m.group(2).lower()]


def parse_duration(text: str) -> float:
    """Seconds of ``"50ms"``, ``"0.2s"``, ``"0"``."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*(ms|s|)\s*", text)
    if m is None:
        raise ValueError(f"latency {text!r}: expected e.g. 50ms or 0.05s")
    return float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


@dataclass(frozen=True, slots=True)
class Links:
    """Every node's link: uplink and downlink in bits/s, one-way latency in seconds."""

    uplink: float
    downlink: float
    latency: float = 0.0

    def fan_out(self, nbytes: float, receivers: int) -> float:
        """Seconds for one sender to send ``nbytes`` to each of ``receivers`` nodes."""
        if receivers == 0:
            return 0.0
        bits = 8 * nbytes
        return self.latency + max(receivers * bits / self.uplink, bits / self.downlink)

    def fan_in(self, nbytes: float, senders: int) -> float:
        """Seconds for ``senders`` nodes to send ``nbytes`` each to one receiver."""
        if senders == 0:
            return 0.0
        bits = 8 * nbytes
        return self.latency + max(bits / self.uplink, senders * bits / self.downlink)


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """One round of one topology with one uplink size: per-node bytes, hub bytes, seconds."""

    role: str
    """Who the ``hub_*`` figures are for: "coordinator", "each edge", "each peer"."""
    node_up: float
    node_down: float
    hub_up: float
    hub_down: float
    seconds: float
    total: float
    """Bytes over every link of the round, each transfer counted once."""


def star(d: int, cohort: int, up: int, links: Links, down: int | None = None) -> RoundPlan:
    """The model (``down`` bytes, float32 by default) to ``cohort`` clients, ``up`` bytes back.

    With a compressed downlink, ``down`` is a delta's size: every round but a client's first.
    """
    down = 4 * d if down is None else down
    t = links.fan_out(down, cohort) + links.fan_in(up, cohort)
    return RoundPlan("coordinator", up, down, cohort * up, cohort * down, t, cohort * (up + down))


def tree(
    d: int, clients: int, edges: int, up: int, links: Links, down: int | None = None
) -> RoundPlan:
    """Root -> edges -> clients: clients send ``up`` bytes, edges float32 to the root.

    Node figures are the clients'; hub figures those of each edge (children and parent).
    ``down``: what an edge sends each client (float32 by default, a delta's size with a
    compressed downlink); the root and the edges exchange float32.
    """
    dense = 4 * d
    down = dense if down is None else down
    per_edge = -(-clients // edges)
    t = (
        links.fan_out(dense, edges)
        + links.fan_out(down, per_edge)
        + links.fan_in(up, per_edge)
        + links.fan_in(dense, edges)
    )
    total = clients * (up + down) + edges * 2 * dense
    return RoundPlan(
        "each edge", up, down, per_edge * up + dense, per_edge * down + dense, t, total
    )


def p2p(message: int, peers: int, degree: float, links: Links) -> RoundPlan:
    """Every peer sends a ``message``-byte model (or CHOCO difference) to each neighbour."""
    k = round(degree)
    bits = 8 * message
    t = links.latency + max(k * bits / links.uplink, k * bits / links.downlink)
    sent = degree * message
    return RoundPlan("each peer", sent, sent, sent, sent, t, peers * sent)
