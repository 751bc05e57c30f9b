"""A standing edge: ``murmura edge --standing --server FEDERATION``.

It asks the federation for jobs as an edge (its edge certificate), and is offered only the
tree jobs that name it (``[edge.NAME]``, ``murmura.federation.tree``). For each one it:

1. refuses a job that names code to import (``job_guard``) or, with ``--policy``, one its
   ``[policy]`` refuses (``policy.check_job``; an edge holds no data, so no budget);
2. builds the deployed edge aggregator (``murmura.node.edge.Edge``, exactly what
   ``murmura edge CONFIG`` runs) from the job and its ``[edge.NAME]`` table, with the root
   coordinator's address as its parent;
3. starts serving its sites on its own host (a port of its own per job, or ``--port``) and
   answers: accepted with that address, which the federation offers to the edge's sites;
4. reports its sites' partial sums to the root until the job ends, then takes the next.

Like a standing site it stays up after each job, retries the federation with backoff, is
offered a resumed job again at its new root address, and stops a job that has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from murmura.errors import ConfigError, MurmuraError
from murmura.federation.config import parse_job_tree
from murmura.federation.policy import SitePolicy, check_job
from murmura.federation.site_loop import Running, StandingNode
from murmura.node.worker import WorkerStats
from murmura.transport import keys

if TYPE_CHECKING:
    from murmura.node.edge import Edge

SERVING_S = 60.0
"""How long an edge waits for its own endpoint to listen before refusing the job."""


class EdgeJob:
    """One job's ``Edge`` on an event loop of its own (the standing node's job thread)."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.serving = threading.Event()
        """Set once the edge listens for its sites (or its run ended first)."""
        self.ended = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[WorkerStats] | None = None
        self._closed = False

    @property
    def address(self) -> str:
        """Where the edge serves its sites."""
        return f"{self.edge.settings.server.host}:{self.edge.port}"

    def run(self) -> WorkerStats:
        """The edge's run (``Edge.run``) until the root ends the job, or ``close``."""
        try:
            return asyncio.run(self._run())
        except asyncio.CancelledError:  # close(): the job ended or moved
            w = self.edge.worker
            return (
                WorkerStats(w.rounds_done, w.after_round, "stopped")
                if w
                else WorkerStats(0, 0, "stopped")
            )
        finally:
            self.serving.set()
            self.ended.set()

    async def _run(self) -> WorkerStats:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self.edge.run())
        if self._closed:
            self._task.cancel()
        while self.edge.port == 0 and not self._task.done():
            await asyncio.sleep(0.05)
        self.serving.set()
        return await self._task

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the edge: its link to the root, then its endpoint (up to ``timeout_s``).

        It waits so that a fixed ``--port`` is free again for the job's next start.
        """
        self._closed = True
        if self.edge.worker is not None:
            self.edge.worker.close()
        if self._loop is not None and self._task is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                self._loop.call_soon_threadsafe(self._task.cancel)
        if self._loop is not None:
            self.ended.wait(timeout_s)

    def run_id(self) -> str | None:
        """The root's run id, once the edge has joined it."""
        return self.edge.worker.link.run_id if self.edge.worker is not None else None


class StandingEdge(StandingNode):
    """A standing edge: for each tree job naming it, the deployed edge role over its sites."""

    role = "edge"

    def __init__(
        self,
        target: str,
        node: str,
        credentials: keys.Credentials | None,
        host: str = "127.0.0.1",
        port: int = 0,
        state_dir: Path = Path("runs/edges"),
        policy: SitePolicy | None = None,
        wait_s: float = 10.0,
    ) -> None:
        super().__init__(target, node, credentials, wait_s)
        self.host, self.port, self.state_dir, self.policy = host, port, state_dir, policy

    def _start(self, job_id: str, offer: dict[str, Any]) -> dict[str, Any]:
        """Start serving the job's sites; the acceptance tells the federation where."""
        job = EdgeJob(self._build(job_id, offer))
        self._launch(job_id, Running(str(offer["address"]), job, job.run_id))
        job.serving.wait(SERVING_S)
        if job.edge.port == 0:
            self._stop_job(job_id, "its endpoint did not start")
            raise MurmuraError(f"edge {self.node}: cannot serve its sites on {self.host}")
        return {"address": job.address}

    def _build(self, job_id: str, offer: dict[str, Any]) -> Edge:
        """The job's edge (its checks first), its parent the job's root coordinator."""
        from murmura.node.role_limits import check_role
        from murmura.node.topology_deploy import edge_from

        cfg, _, tree = parse_job_tree(str(offer["config"]), job_id)
        if tree is None or self.node not in tree.edges:
            raise MurmuraError(f"edge {self.node}: job {job_id} names no [edge.{self.node}]")
        if self.policy is not None:
            reason = check_job(self.policy, cfg, str(offer.get("submitter", "")), None)
            if reason is not None:
                raise MurmuraError(f"edge {self.node} refuses the job: {reason}")
        check_role("edge", cfg)
        state = self.state_dir / "jobs" / job_id
        sec = tree.section(self.node, str(offer["address"]), self.host, self.port, None, str(state))
        return edge_from(cfg, sec, self.credentials, self.credentials is None)


def edge_policy(path: Path) -> SitePolicy:
    """The ``[policy]`` of an edge's policy file (no budget: an edge releases no data)."""
    try:
        table = tomllib.loads(path.read_text()).get("policy", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    policy = SitePolicy.from_table(table, str(path))
    if policy.lifetime_epsilon is not None:
        raise ConfigError(
            f"{path}: [policy] lifetime_epsilon is a site's budget over its data; an edge "
            "holds none (its sites keep theirs): unset it"
        )
    return policy
