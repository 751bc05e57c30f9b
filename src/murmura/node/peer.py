"""A networked peer: trains locally, serves its model, dials its neighbours, and mixes.

The per-peer math is ``murmura.peer_learner`` (the same as the in-process P2P simulation); this
module adds rounds over gRPC. Rounds are synchronous with a deadline: in round r a peer
trains from its model, publishes what it sends for r, asks every neighbour for its round-r
model (long-poll until the deadline), mixes with the neighbours that answered (the others are
skipped and the weights renormalised, ``murmura.topology.renormalize``), then writes its
model to its own checkpoint atomically. A neighbour that was unreachable in one round gets a
single try in the next (no retries), so a dead neighbour costs one deadline, not one per round.
A restarted peer resumes from its checkpoint and, if its neighbours are further on, jumps to
their round; nothing ever waits past a deadline, so no peer deadlocks on a dead neighbour.
A ``sender`` (red-teaming only) replaces what the peer publishes; it still mixes honestly.
With ``[privacy]`` the learner is the simulation's privatised one (local DP, DP-SGD) and the
peer spends the same budgets: epsilon in ``metrics.jsonl``, and no round past a target.
With ``[compression] uplink`` (CHOCO-gossip, ``murmura.compress.choco.PeerCopies``) a peer
serves its framed ``q_i`` instead of its model and mixes toward the public copies. A copy is
only right while every ``q_j`` arrived: a neighbour whose ``q_j`` of a round was missed is
not mixed (its copy is stale, and no holder can tell by how much) until it is resynced: in
each later round the peer asks that neighbour for its public copy itself, float32, instead
of ``q_j`` (``ModelRequest.public_copy``), and takes it as its copy. The peer never jumps
rounds. Its checkpoint carries the copies and the stale set, so a peer restarted within
a round's deadline reruns that round from them (training and ``q_i`` are deterministic) and
its neighbours, still waiting for that ``q_i``, never see the gap; it serves the ``q_i`` of its
checkpoint's round again (kept in the checkpoint) to a neighbour that had not fetched it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from murmura import console
from murmura.attacks.peer_sender import RoundSender
from murmura.compress.base import spec
from murmura.compress.choco import PeerCopies
from murmura.engine.peer_round import Mixer, local_step, message, mix
from murmura.engine.run_loop import evaluates
from murmura.errors import CheckpointError, IdentityError, InstructionRejected, ProtocolError
from murmura.learner import Learner
from murmura.node import progress
from murmura.node.instructions import check_model
from murmura.privacy.budget import PrivacyBudget, charge_through
from murmura.storage import load_tensors_verified, remove_orphan_temps, save_tensors_atomically
from murmura.topology import consensus_distance
from murmura.transport import codec, keys
from murmura.transport.dial_check import Unreachable
from murmura.transport.grpc_client import backoff_delays
from murmura.transport.grpc_server import ServerOptions
from murmura.transport.peer_service import Fetched, ModelStore, NeighbourLink, start_peer_server
from murmura.types import EvaluateRes, Layout, Vector

log = logging.getLogger(__name__)
EvaluateFn = Callable[[Vector], EvaluateRes]


@dataclass(frozen=True, slots=True)
class PeerSettings:
    """Who this peer is, where everyone listens, and how rounds are timed."""

    index: int
    names: Sequence[str]
    addresses: Sequence[str]
    run_id: str
    state_dir: Path
    rounds: int = 10
    round_timeout_s: float = 10.0
    join_timeout_s: float = 60.0
    """Deadline of the first round this process runs (neighbours may still be starting)."""
    round_period_s: float = 0.0
    """Least time between the starts of two rounds (paces the exchange); 0: no pacing."""
    evaluate_every: int = 1
    credentials: keys.Credentials | None = None
    insecure: bool = False
    max_model_bytes: int = codec.DEFAULT_MAX_BYTES
    chunk_size: int = codec.DEFAULT_CHUNK

    @property
    def name(self) -> str:
        """The peer's node id (its certificate's common name)."""
        return self.names[self.index]


@dataclass(slots=True)
class PeerResult:
    """What a peer did: rounds run by this process, the last round, and its final model."""

    rounds_run: int
    last_round: int
    weights: Vector
    resumed_from: int = 0
    missing: dict[int, list[str]] = field(default_factory=dict)


SENT_Q = "__choco_q__"
"""Checkpoint tensor: the framed ``q_i`` of the checkpoint's round, served again on resume."""
STALE = "choco_stale"
"""Checkpoint metadata: the neighbours whose CHOCO copy is stale (JSON list of indices)."""


def checkpoint_file(state_dir: Path) -> Path:
    """Where a peer keeps its latest model."""
    return state_dir / "model.safetensors"


def save_peer_checkpoint(
    path: Path,
    weights: Vector,
    layout: Layout,
    meta: Mapping[str, str],
    extra: Mapping[str, Vector] | None = None,
) -> None:
    """Write the peer's model, its metadata and ``extra`` tensors (CHOCO's copies) atomically."""
    tensors = {k: np.ascontiguousarray(v) for k, v in layout.unflatten(weights).items()}
    save_tensors_atomically(path, {**tensors, **(extra or {})}, meta)


def read_peer_checkpoint(
    path: Path, layout: Layout
) -> tuple[dict[str, str], Vector, dict[str, Vector]] | None:
    """Metadata, model and every tensor of a checkpoint from ``save_peer_checkpoint``, if any.

    ``CheckpointError`` if the file is cut off, differs from its content digest or does not
    hold this model.
    """
    if not path.exists():
        return None
    tensors, meta = load_tensors_verified(path)
    try:
        return meta, layout.flatten(tensors), tensors
    except ValueError as exc:
        raise CheckpointError(f"{path} does not hold this model: {exc}") from None


class Peer:
    """One peer of a P2P run over gRPC; ``run`` serves, trains and mixes every round."""

    def __init__(
        self,
        settings: PeerSettings,
        learner: Learner,
        initial_weights: Vector,
        layout: Layout,
        row: Mapping[int, float],
        mixer: Mixer,
        evaluate_fn: EvaluateFn | None = None,
        sender: RoundSender | None = None,
        budgets: Sequence[PrivacyBudget] = (),
        choco: PeerCopies | None = None,
    ) -> None:
        self.s, self.learner, self.layout = settings, learner, layout
        self.budgets = list(budgets)
        """Privacy budgets spent once per round (``[privacy]``), as in the simulation."""
        self.row, self.mixer, self.evaluate_fn = dict(row), mixer, evaluate_fn
        self.sender = sender
        """Red-teaming only: what this peer sends instead of its trained model."""
        self.weights = np.asarray(initial_weights, dtype=np.float32).copy()
        self.neighbours = sorted(j for j in self.row if j != settings.index)
        self.suspects: set[int] = set()
        self.links: dict[int, NeighbourLink] = {}
        self.store = ModelStore(settings.run_id, settings.name, layout)
        self.port = 0
        self.done = 0
        """The round of the peer's checkpoint: where the same command resumes."""
        self._rng = random.Random()
        self.choco = choco
        """CHOCO-gossip's public copies (``[compression] uplink``); None: float32 models."""
        self.stale: set[int] = set()
        self.sent_q = b""
        """CHOCO-gossip: the framed ``q_i`` of the last round (checkpointed, served again)."""
        """CHOCO-gossip: neighbours whose copy missed a ``q_j``; never mixed again."""

    def _tag(self, round_: int) -> str:
        return f"node={self.s.name} round={round_}"

    def _resume(self) -> int:
        """Load our checkpoint if it belongs to this run and verifies; return its round.

        A damaged one is set aside (``*.damaged``) with a warning and the peer starts from the
        initial model, then rejoins its neighbours' round like a new peer.
        """
        path = checkpoint_file(self.s.state_dir)
        for tmp in remove_orphan_temps([self.s.state_dir]):
            log.warning("%s: removed %s, a temporary file left by a crash", self._tag(0), tmp)
        try:
            got = read_peer_checkpoint(path, self.layout)
        except CheckpointError as exc:
            os.replace(path, path.with_name(path.name + ".damaged"))
            log.warning(
                "%s: damaged checkpoint: %s; renamed to %s.damaged, starting from the "
                "initial model",
                self._tag(0), exc, path.name,
            )  # fmt: skip
            return 0
        if got is None:
            return 0
        meta, weights, tensors = got
        if meta.get("run_id") != self.s.run_id or meta.get("node") != self.s.name:
            log.warning("%s: checkpoint of another run or node ignored", self._tag(0))
            return 0
        if self.choco is not None:  # the copies of the same round as the model
            try:
                self.choco.restore(tensors, str(path))
                self.sent_q = tensors.get(SENT_Q, np.zeros(0, np.uint8)).tobytes()
                self.stale = {int(j) for j in json.loads(meta.get(STALE, "[]"))}
            except (ValueError, TypeError) as exc:
                raise CheckpointError(f"{exc}: start the run afresh") from None
        self.weights = weights
        done = int(meta.get("round", "0"))
        log.info("%s: resumed from own checkpoint", self._tag(done))
        return done

    async def run(self) -> PeerResult:
        """Serve and run rounds until ``rounds``; then serve until neighbours have our last."""
        s = self.s
        done = self.done = self._resume()
        host, port = s.addresses[s.index].rsplit(":", 1)
        opts = ServerOptions(
            host=host,
            port=int(port),
            credentials=s.credentials,
            insecure=s.insecure,
            allowlist=frozenset(s.names[j] for j in self.neighbours),
            chunk_size=s.chunk_size,
        )
        server, self.port = await start_peer_server(self.store, opts)
        if self.choco is not None and done and self.sent_q:  # for whoever has not fetched it
            mine = self.choco.public[s.index]
            await self.store.publish_compressed(done, self.sent_q, spec(self.choco.codec), mine)
        progress.listening(s.name, f"{host}:{self.port}", s.credentials is not None, s.run_id)
        progress.run_opened(s.name, s.run_id, done, s.rounds, resumed=done > 0)
        self.links = {
            j: NeighbourLink(
                s.name, s.names[j], s.addresses[j], s.run_id, self.layout, s.credentials,
                s.max_model_bytes, None if self.choco is None else self.choco.codec,
            )
            for j in self.neighbours
        }  # fmt: skip
        result = PeerResult(0, done, self.weights, resumed_from=done)
        try:
            r, first = done + 1, True
            while r <= s.rounds and not self._budget_stops(r):
                began = time.monotonic()
                r_next = await self.run_round(r, first, result)
                await asyncio.sleep(max(0.0, s.round_period_s - (time.monotonic() - began)))
                first, result.rounds_run, result.last_round = False, result.rounds_run + 1, r
                r = r_next
            if result.rounds_run:
                await self._linger(result.last_round)
        finally:
            for link in self.links.values():
                await link.close()
            await server.stop(grace=0.5)
        result.weights = self.weights
        return result

    async def run_round(self, round_: int, first: bool, result: PeerResult) -> int:
        """Train, publish, gather, mix, checkpoint; return the next round to run."""
        t0 = time.perf_counter()
        trained, loss = await asyncio.to_thread(local_step, self.learner, self.weights, round_)
        wire = b""
        if self.choco is not None:
            wire = self.sent_q = self.choco.encode(round_, trained)
            mine = self.choco.public[self.s.index]  # what a neighbour resyncs to
            await self.store.publish_compressed(round_, wire, spec(self.choco.codec), mine)
        else:
            await self.store.publish(round_, message(round_, self.weights, trained, self.sender))
        timeout = self.s.join_timeout_s if first else self.s.round_timeout_s
        answers = await self.gather(round_, time.monotonic() + timeout)
        received = {j: f.weights for j, f in answers.items() if f.weights is not None}
        missing = [self.s.names[j] for j in self.neighbours if j not in received]
        if self.choco is None:
            spread = (
                consensus_distance(np.stack([trained, *received.values()])) if received else None
            )
            mixed = mix(self.mixer, self.s.index, trained, received, self.row)
        else:
            spread, mixed = None, self._choco_mix(round_, trained, received)
        self.weights = np.asarray(mixed, dtype=np.float32)
        meta = {"run_id": self.s.run_id, "node": self.s.name, "round": str(round_)}
        copies = None
        if self.choco is not None:
            meta[STALE] = json.dumps(sorted(self.stale))
            copies = {**self.choco.tensors(), SENT_Q: np.frombuffer(wire, dtype=np.uint8)}
        await asyncio.to_thread(
            save_peer_checkpoint, checkpoint_file(self.s.state_dir), self.weights, self.layout,
            meta, copies,
        )  # fmt: skip
        self.done = round_
        if missing:
            result.missing[round_] = missing
            log.warning("%s: mixed without %s (weights renormalised)", self._tag(round_), missing)
        # Evaluating may take a while on a big task: off the loop, which keeps serving.
        wire_bytes = None
        if self.choco is not None:
            down = sum(answers[j].wire_bytes for j in received)
            wire_bytes = (len(wire) * len(self.neighbours), down)
        await asyncio.to_thread(
            self._record, round_, loss, sorted(received), missing, time.perf_counter() - t0,
            spread, wire_bytes,
        )  # fmt: skip
        return self._next_round(round_, answers)

    def _choco_mix(self, round_: int, trained: Vector, received: Mapping[int, Vector]) -> Vector:
        """Apply the neighbours' ``q_j`` (or resync a stale copy); mix the whole copies.

        ``received[j]`` is ``q_j``, or for a stale neighbour its public copy itself.
        """
        assert self.choco is not None
        for j in self.neighbours:
            name = self.s.names[j]
            if j in received and j in self.stale:
                self.choco.public[j] = np.array(received[j], dtype=np.float32)
                self.stale.discard(j)
                log.info("%s: resynced %s's public copy (float32)", self._tag(round_), name)
            elif j in received:
                self.choco.receive(j, received[j])
            elif j not in self.stale:
                self.stale.add(j)
                log.warning(
                    "%s: missed %s's CHOCO difference: its public copy is stale and not mixed "
                    "until it is resynced", self._tag(round_), name,
                )  # fmt: skip
        present = [j for j in self.neighbours if j not in self.stale]
        return self.choco.mix(trained, present)

    def _budget_stops(self, round_: int) -> bool:
        """Whether running ``round_`` would take a privacy budget past its target."""
        charge_through(self.budgets, round_ - 1)
        if any(b.would_exceed() for b in self.budgets):
            log.warning("%s: would exceed the privacy budget: stopping", self._tag(round_))
            return True
        return False

    def _next_round(self, round_: int, answers: Mapping[int, Fetched]) -> int:
        """``round_ + 1``, or the round the neighbours are at if we fell more than one behind.

        Only authenticated neighbours' claims count, and the jump goes to the nearest of
        those ahead, never past the last round, so one neighbour cannot end our run early.
        """
        ahead = [f.latest_round for f in answers.values() if f.latest_round > round_ + 1]
        if not ahead or self.choco is not None:  # CHOCO needs every q_j: never skip a round
            return round_ + 1
        target = max(min(min(ahead), self.s.rounds), round_ + 1)
        log.info("%s: neighbours are at round %d; rejoining there", self._tag(round_), target)
        return target

    async def gather(self, round_: int, deadline: float) -> dict[int, Fetched]:
        """Every neighbour's answer for ``round_`` that came before ``deadline``."""
        order = list(self.links)
        got = await asyncio.gather(*(self._ask(j, round_, deadline) for j in order))
        answers = {j: f for j, f in zip(order, got, strict=True) if f is not None}
        for j in order:
            if j in answers and answers[j].weights is not None:
                self.suspects.discard(j)
            else:
                self.suspects.add(j)
        return answers

    async def _ask(self, j: int, round_: int, deadline: float) -> Fetched | None:
        """Long-poll neighbour ``j``; retry an unreachable one only if it answered last time."""
        link, retry = self.links[j], j not in self.suspects
        delays = backoff_delays(0.1, 1.0, self._rng)
        last: Fetched | None = None
        attempt = 0
        while (left := deadline - time.monotonic()) > 0:
            attempt += 1
            try:
                last = await link.fetch(round_, left, copy=j in self.stale)
            except (grpc.aio.AioRpcError, Unreachable) as exc:
                code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else "UNREACHABLE"
                if code == grpc.StatusCode.UNAVAILABLE:
                    link.verified = False  # whoever answers next is checked again
                if code in (grpc.StatusCode.UNAVAILABLE, "UNREACHABLE") and retry:
                    delay = min(next(delays), left)
                    if attempt & (attempt - 1) == 0:  # attempts 1, 2, 4, 8...: not every 0.5 s
                        what = f"neighbour {link.neighbour}"
                        console.retrying(log, self.s.name, what, link.target, delay, attempt)
                    await asyncio.sleep(delay)
                    continue
                log.info("%s: %s did not answer: %s", self._tag(round_), link.neighbour, code)
                return last
            except IdentityError as exc:
                log.error("%s: refusing neighbour %s: %s", self._tag(round_), link.neighbour, exc)
                return None
            except ProtocolError as exc:
                log.warning("%s: bad reply from %s: %s", self._tag(round_), link.neighbour, exc)
                return None
            if last.weights is not None:
                try:  # the layout is also checked while decoding (NeighbourLink)
                    check_model(last.weights, None, self.layout)
                except InstructionRejected as exc:
                    log.warning(
                        "%s: %s's model dropped: %s", self._tag(round_), link.neighbour, exc
                    )
                    return None
            if last.weights is not None or last.latest_round >= round_:
                return last
        return last

    async def _linger(self, last_round: int) -> None:
        """Keep serving until the neighbours that are alive fetched our last model."""
        alive = {self.s.names[j] for j in self.neighbours if j not in self.suspects}
        left = await self.store.wait_fetched(alive, last_round, self.s.round_timeout_s)
        if left:
            log.info("%s: leaving before %s fetched our last model", self._tag(last_round), left)

    def _record(
        self,
        round_: int,
        loss: float,
        present: list[int],
        missing: list[str],
        secs: float,
        spread: float | None = None,
        wire_bytes: tuple[int, int] | None = None,
    ) -> None:
        """Append the round's line to ``metrics.jsonl`` and print it.

        ``spread``: the local consensus distance, over this peer's trained model and the
        neighbours' models it mixed (``murmura.topology.consensus_distance``), before mixing.
        ``wire_bytes``: CHOCO-gossip's bytes sent (``q_i`` once per neighbour) and received.
        """
        line: dict[str, object] = {
            "round": round_,
            "node": self.s.name,
            "train_loss": None if math.isnan(loss) else loss,  # NaN: local DP reports none
            "neighbours": [self.s.names[j] for j in present],
            "missing": missing,
            "seconds": secs,
            "local_consensus_distance": spread,
        }
        if wire_bytes is not None:
            line["bytes_up"], line["bytes_down"] = wire_bytes
        charge_through(self.budgets, round_)
        for budget in self.budgets:
            line.update(budget.metrics())
        last = round_ == self.s.rounds or any(b.would_exceed() for b in self.budgets)
        if self.evaluate_fn is not None and evaluates(round_, self.s.evaluate_every, last):
            ev = self.evaluate_fn(self.weights)
            line["test_loss"], line["test_accuracy"] = ev.loss, ev.metrics.get("accuracy")
        with open(self.s.state_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")
        progress.peer_round(self.s.name, self.s.run_id, line, self.s.rounds, len(self.neighbours))
