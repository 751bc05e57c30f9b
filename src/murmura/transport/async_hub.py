"""A hub for asynchronous aggregation: every worker has its own open dispatch.

In ``[clock] mode = 'async'`` the coordinator hands the current model to any idle worker,
so several models are out at once and results arrive one by one. Each hand-out is a
*dispatch*: a one-target round of the ``Hub``, numbered by a ticket that is unique within
the run (the wire's round number). Binding (run, ticket, node), duplicate detection, the
sink, refusals and the events are the ``Hub``'s own; only which round a result belongs to
and what a pulling worker is owed change. A dispatch is settled once its result or its
failure is in, its node is lost, or its deadline passed; the coordinator then takes it
(``settle``) and may hand that node the next model.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from murmura.transport.hub import Events, Hub, Outgoing, RoundState, Sink
from murmura.types import Layout


@dataclass(frozen=True, slots=True)
class Settled:
    """A closed dispatch: its node and ticket, and why it failed (None: a result came)."""

    node: str
    ticket: int
    failure: str | None


class AsyncHub(Hub):
    """A ``Hub`` whose open rounds are per-worker dispatches (``node.async_coordinator``)."""

    def __init__(
        self,
        run_id: str,
        layout: Layout,
        heartbeat_s: float = 2.0,
        lost_after_s: float = 10.0,
        events: Events | None = None,
    ) -> None:
        super().__init__(run_id, heartbeat_s, lost_after_s, events)
        self.layout = layout
        self.dispatches: dict[int, RoundState] = {}
        self._deadlines: dict[int, float] = {}

    def busy(self) -> set[str]:
        """The nodes that hold an open dispatch."""
        return {n for st in self.dispatches.values() for n in st.targets}

    async def dispatch(self, outgoing: Outgoing, node: str, sink: Sink, timeout_s: float) -> None:
        """Hand ``outgoing`` (its round is the ticket) to ``node``; its result goes to ``sink``."""
        async with self._changed:
            self.dispatches[outgoing.round] = RoundState(outgoing, frozenset({node}), sink)
            self._deadlines[outgoing.round] = time.monotonic() + timeout_s
            self.pulls.rounds_kept = max(self.pulls.rounds_kept, len(self.dispatches) + 4)
            self._changed.notify_all()

    async def settle(self, wait_s: float) -> list[Settled]:
        """Close and return the settled dispatches, waiting up to ``wait_s`` for one."""
        async with self._changed:
            done = self._settled()
            if not done:
                try:  # asyncio.timeout, as in Hub.next_instruction
                    async with asyncio.timeout(max(wait_s, 0.0)):
                        await self._changed.wait()
                except TimeoutError:
                    pass
                done = self._settled()
        for s in done:
            del self.dispatches[s.ticket], self._deadlines[s.ticket]
        return done

    def _settled(self) -> list[Settled]:
        alive, now, out = set(self.alive()), time.monotonic(), []
        for ticket, st in self.dispatches.items():
            (node,) = st.targets
            why: str | None = st.failures.get(node)
            if node in st.results:
                out.append(Settled(node, ticket, None))
                continue
            if why is None and node not in st.uploading:
                if node not in alive:
                    why = f"lost: no heartbeat for more than {self.lost_after_s:g} s"
                elif now > self._deadlines[ticket]:
                    why = "no result before the round deadline"
                if why is not None and node in st.last_error:
                    why += f" (last error: {st.last_error[node]})"
            if why is not None:
                st.open = False
                out.append(Settled(node, ticket, why))
        return out

    def _state_of(self, round_: int) -> RoundState | None:
        return self.dispatches.get(round_) or super()._state_of(round_)

    def _state_for(self, node: str) -> RoundState | None:
        for st in self.dispatches.values():
            if node in st.targets:
                return st
        return super()._state_for(node)

    def _pending(self, node: str) -> Outgoing | None:
        for st in self.dispatches.values():
            if node not in st.targets or not st.open:
                continue
            if node in st.results or node in st.failures or node in st.uploading:
                return None
            if not self.pulls.may_send(node, st.round, st.outgoing.kind):
                return None
            return st.outgoing
        return super()._pending(node)

    def expected_layout(self) -> Layout | None:
        """Every dispatch carries the run's layout."""
        return self.layout
