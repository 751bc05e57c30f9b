"""One server round over in-process learners: sample, configure, fit, validate into a buffer.

Written once for the simulated star's server (``murmura.sim.runtime.Simulation``) and every
edge of a simulated tree (``murmura.sim.hierarchical.EdgeAggregator``, a Learner to its parent
whose ``fit`` is this round over its children); each then aggregates the buffer with its own
strategy. ``plan_round`` is the first half (the cohort and its ``FitIns``), ``collect`` the
second (every outcome validated into an ``UpdateBuffer``); an executor trains the cohort in
between, so a tree's root can train every edge's children in one call
(``murmura.sim.tree_executor``). The deployed coordinator (``murmura.node.coordinator``) plans
its round with ``plan_cohort`` once enough nodes joined, and ``admit``s each update as it
arrives over gRPC.

Omniscient attacker hook (simulation only): a learner that implements ``OmniscientClient``
(an attack such as ALIE or IPM, see ``murmura.attacks``) trains like any other, but its result
is held back until every other result of the round has been validated; ``collect`` then calls
``learner.craft(view, own)`` with a ``HonestView`` of the accepted honest updates, and
validates what it returns like any update. Strategies never see the difference.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from murmura.aggregate.buffer import UpdateBuffer
from murmura.errors import UpdateRejected
from murmura.learner import Learner
from murmura.strategy.base import Strategy
from murmura.types import Failure, FitIns, FitRes, Scalar, Vector
from murmura.validation import Check, validate

log = logging.getLogger(__name__)
Outcome = tuple[str, FitRes | BaseException]
"""A learner's id and its result, or what its ``fit`` raised."""


@dataclass(frozen=True, slots=True)
class HonestView:
    """What an omniscient attacker sees: this round's validated honest results."""

    round: int
    updates: Sequence[Vector]
    num_examples: Sequence[int]
    num_byzantine: int
    nodes: Sequence[str] = ()
    """The node ids of ``updates``, in order (an attack that follows one worker across rounds)."""
    byzantine_examples: Sequence[int] = ()
    """The example counts the round's attackers claim (a weighted rule weighs them so)."""


@runtime_checkable
class OmniscientClient(Protocol):
    """A simulated attacker that crafts its update from the round's honest updates."""

    node_id: str

    def craft(self, view: HonestView, own: FitRes) -> FitRes:
        """The update to send, given the honest view and this client's own honest result."""
        ...


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """A round's cohort, in the strategy's order, and the instructions they all get."""

    ins: FitIns
    cohort: list[Learner]


@dataclass(frozen=True, slots=True)
class CohortPlan:
    """A round's cohort by node id, in the strategy's order, and their instructions."""

    ins: FitIns
    cohort: list[str]


def instructions(
    strategy: Strategy, round_: int, weights: Vector, config: Mapping[str, Scalar] | None = None
) -> FitIns:
    """The round's ``FitIns``: ``weights``, the strategy's config over ``config`` (a parent's)."""
    own = strategy.configure(round_, weights)
    return FitIns(round_, weights, own if config is None else {**config, **own})


def plan_cohort(
    strategy: Strategy,
    round_: int,
    nodes: Sequence[str],
    weights: Vector,
    config: Mapping[str, Scalar] | None = None,
) -> CohortPlan:
    """Sample ``nodes``, then configure the round (``instructions``).

    The deployed coordinator plans its round so, given the nodes that joined.
    """
    sampled = strategy.sample(round_, list(nodes))
    return CohortPlan(instructions(strategy, round_, weights, config), sampled)


def plan_round(
    strategy: Strategy,
    round_: int,
    learners: Mapping[str, Learner],
    nodes: Sequence[str],
    weights: Vector,
    config: Mapping[str, Scalar] | None = None,
) -> RoundPlan:
    """``plan_cohort`` over in-process ``learners``: the cohort is the sampled learners."""
    plan = plan_cohort(strategy, round_, nodes, weights, config)
    return RoundPlan(plan.ins, [learners[n] for n in plan.cohort])


def collect(
    round_: int,
    cohort: Sequence[Learner],
    outcomes: Iterable[Outcome],
    buffer: UpdateBuffer,
    checks: Sequence[Check],
    who: str = "client",
) -> list[Failure]:
    """Validate every outcome into ``buffer``; omniscient attackers craft theirs last.

    Returns the round's failures, each with its node and reason (``who`` raised, rejected).
    """
    members = {c.node_id: c for c in cohort}
    omniscient = {n for n, c in members.items() if isinstance(c, OmniscientClient)}
    failures: list[Failure] = []
    held: list[tuple[str, FitRes]] = []
    honest: list[tuple[str, FitRes]] = []
    for node, outcome in outcomes:
        if node in omniscient and isinstance(outcome, FitRes):
            held.append((node, outcome))
            continue
        reason = accept(round_, node, outcome, buffer, checks, who)
        if reason is not None:
            failures.append(Failure(node, reason))
        elif omniscient and isinstance(outcome, FitRes):
            honest.append((node, outcome))
    view = HonestView(
        round_,
        [r.update for _, r in honest],
        [r.num_examples for _, r in honest],
        len(omniscient),
        [n for n, _ in honest],
        [own.num_examples for _, own in held],
    )
    for node, own in held:
        attacker = members[node]
        assert isinstance(attacker, OmniscientClient)
        try:
            crafted: FitRes | BaseException = attacker.craft(view, own)
        except Exception as exc:  # noqa: BLE001 - a failing attacker must not end the round
            crafted = exc
        reason = accept(round_, node, crafted, buffer, checks, who)
        if reason is not None:
            failures.append(Failure(node, reason))
    return failures


def accept(
    round_: int,
    node: str,
    outcome: FitRes | BaseException,
    buffer: UpdateBuffer,
    checks: Sequence[Check],
    who: str = "client",
) -> str | None:
    """Validate one outcome into ``buffer``, or return why it was left out."""
    if isinstance(outcome, BaseException):
        log.warning("round %d node %s: %s raised %r", round_, node, who, outcome)
        return f"{who} raised {type(outcome).__name__}: {outcome}"
    try:
        admit(round_, node, outcome, buffer, checks)
    except UpdateRejected as exc:
        log.warning("%s", exc)
        return f"rejected: {exc.reason}"
    return None


def admit(
    round_: int,
    node: str,
    fit: FitRes,
    buffer: UpdateBuffer,
    checks: Sequence[Check],
    metrics: Mapping[str, float] | None = None,
) -> None:
    """Validate ``fit`` and add it to ``buffer``; raises ``UpdateRejected`` with the reason.

    ``metrics`` is what the buffer keeps with the update instead of ``fit.metrics`` (the
    coordinator adds the bytes it counted on the wire). ``accept`` turns the rejection into
    a failure; the deployed coordinator's hub refuses the upload with it, as it arrives.
    """
    validate(node, round_, fit, checks)
    buffer.add(node, fit.update, fit.num_examples, fit.metrics if metrics is None else metrics)
