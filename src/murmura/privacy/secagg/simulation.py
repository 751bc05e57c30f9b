"""In-memory driver of one SecAgg+ round: every client and the server, stage by stage.

This is what a strategy or the simulation runtime calls; a deployment runs the same
:class:`SecAggClient` and :class:`SecAggServer` methods over a transport instead. Every
message goes through the wire codec in both directions, so byte counts are those of real
messages and no Python object crosses between a client and the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Literal

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from numpy.typing import NDArray

from murmura.errors import ConfigError
from murmura.privacy.secagg.client import SecAggClient
from murmura.privacy.secagg.config import (
    SecAggConfig,
    Stage,
    default_neighbours,
    default_threshold,
)
from murmura.privacy.secagg.errors import SecAggAbort
from murmura.privacy.secagg.messages import (
    ClientMessage,
    KeyDirectory,
    M,
    MaskRequest,
    ShareDelivery,
    UnmaskRequest,
    decode,
    decode_as,
    encode,
)
from murmura.privacy.secagg.server import SecAggResult, SecAggServer

logger = logging.getLogger(__name__)
Intercept = Callable[[ClientMessage], ClientMessage]


class _Round:
    """Clients, server, codec round trips, and meters of bytes and seconds."""

    def __init__(self, config: SecAggConfig, intercept: Intercept | None) -> None:
        n = config.num_clients
        identities = {u: Ed25519PrivateKey.generate() for u in range(n)}
        public = {u: key.public_key() for u, key in identities.items()}
        self.clients = {u: SecAggClient(config, u, identities[u], public) for u in range(n)}
        self.server = SecAggServer(config, public)
        self.intercept = intercept
        self.bytes_sent = dict.fromkeys(range(n), 0)
        self.client_seconds = dict.fromkeys(range(n), 0.0)
        self.server_seconds = 0.0

    @contextmanager
    def timed(self, client: int | None) -> Iterator[None]:
        """Charge the enclosed time to ``client``, or to the server when ``None``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            if client is None:
                self.server_seconds += spent
            else:
                self.client_seconds[client] += spent

    def download(self, make: Callable[[], M], kind: type[M]) -> M:
        """A server -> client message, built and encoded by the server."""
        with self.timed(None):
            wire = encode(make())
        return decode_as(wire, kind)

    def upload(self, u: int, make: Callable[[], ClientMessage]) -> None:
        """Let client ``u`` build a message and hand its bytes to the server.

        A client that aborts on its side (too few valid neighbours, inconsistent request)
        simply stops answering: the server sees a dropout.
        """
        try:
            with self.timed(u):
                msg = make()
                msg = self.intercept(msg) if self.intercept is not None else msg
                wire = encode(msg)
        except SecAggAbort as err:
            logger.warning("client %d left the round: %s", u, err)
            return
        self.bytes_sent[u] += len(wire)
        with self.timed(None):
            self.server.receive(decode(wire))

    def close(self, step: Callable[[], None]) -> None:
        """Close a stage on the server."""
        with self.timed(None):
            step()


def _drive(sim: _Round, present: Mapping[Stage, Set[int]], updates: NDArray[np.floating],
           weights: NDArray[np.float64], seed: int) -> SecAggResult:  # fmt: skip
    """Push every client through the four stages; ``present[s]`` may still act at stage s."""
    c, s = sim.clients, sim.server
    for u in sorted(present[Stage.ADVERTISE]):
        sim.upload(u, c[u].advertise)
    sim.close(s.close_advertise)
    for u in (u for u in s.advertised if u in present[Stage.SHARE]):
        directory = sim.download(partial(s.key_directory, u), KeyDirectory)
        sim.upload(u, partial(c[u].share_keys, directory))
    sim.close(s.close_sharing)
    for u in s.sharers:
        delivery = sim.download(partial(s.share_delivery, u), ShareDelivery)
        sim.upload(u, partial(c[u].receive_shares, delivery))
    sim.close(s.close_receipts)
    for u in (u for u in s.maskers if u in present[Stage.MASKED_INPUT]):
        request = sim.download(partial(s.mask_request, u), MaskRequest)
        rng = np.random.default_rng([seed, u])
        sim.upload(u, partial(c[u].masked_input, request, updates[u], float(weights[u]), rng))
    sim.close(s.close_inputs)
    for u in (u for u in s.survivors if u in present[Stage.UNMASK]):
        unmask = sim.download(partial(s.unmask_request, u), UnmaskRequest)
        sim.upload(u, partial(c[u].unmask, unmask))
    with sim.timed(None):
        result = s.finish()
    return replace(result, bytes_sent=sim.bytes_sent, client_seconds=sim.client_seconds,
                   server_seconds=sim.server_seconds)  # fmt: skip


def run_secagg_round(
    updates: NDArray[np.floating],
    weights: Sequence[float] | NDArray[np.floating],
    *,
    threshold: int | None = None,
    neighbours: int | None = None,
    dropouts: Mapping[Stage, Set[int]] | None = None,
    seed: int = 0,
    clip: float = 1.0,
    max_weight: float | None = None,
    rounding: Literal["stochastic", "deterministic"] = "stochastic",
    round_: int = 0,
    intercept: Intercept | None = None,
    level_bits: int | None = None,
) -> SecAggResult:
    """Run one SecAgg+ round over ``updates`` (n, d) with per-client ``weights``, in memory.

    Returns the weighted sum ``sum_u w_u clip(x_u)`` and total weight over the survivors,
    the survivors themselves, and the per-client bytes and seconds. ``dropouts[stage]`` are
    the clients that stop answering at that stage: at ADVERTISE they never join, at SHARE
    they advertise but share nothing, at MASKED_INPUT they acknowledge their shares but send
    no input, at UNMASK their input is in but they reveal no shares. ``intercept`` sees, and
    may replace, every message a client sends (tampering tests). ``max_weight`` defaults to
    the largest weight; a deployment must fix it in advance. ``seed`` fixes the public graph
    and the rounding noise, never key material. ``neighbours`` and ``threshold`` default to
    :func:`default_neighbours` and :func:`default_threshold`. Raises :class:`SecAggAbort`
    when some closed neighbourhood keeps fewer than ``threshold`` members. ``level_bits``
    quantises to that many bits on the public grid and masks mod 2^16 (``LevelQuantizer``).
    """
    n, d = np.shape(updates)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ConfigError(f"weights must be {n} finite non-negative numbers")
    k = default_neighbours(n) if neighbours is None else neighbours
    config = SecAggConfig(
        num_clients=n, dim=d, neighbours=k,
        threshold=default_threshold(k) if threshold is None else threshold,
        clip=clip, max_weight=float(max_weight or w.max() or 1.0),
        round_=round_, graph_seed=seed, rounding=rounding, level_bits=level_bits,
    )  # fmt: skip
    gone: set[int] = set()
    present: dict[Stage, Set[int]] = {}
    for stage in Stage:
        gone |= set((dropouts or {}).get(stage, set()))
        present[stage] = frozenset(range(n)) - gone
    return _drive(_Round(config, intercept), present, updates, w, seed)
