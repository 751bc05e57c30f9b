"""Runs the queued jobs of a standing federation with the deployed coordinator, one by one.

Each job is an ordinary run (``node.deploy.build_coordinator``) in a state dir of its own,
``jobs/<id>/``, served on a port of its own, so checkpoints, resume, the audit ledger and
the run folder (metrics, summary, plots, final model) are those of ``murmura server``. Up to
``max_concurrent_jobs`` run at once, the others wait, oldest first. A job that was running
when the federation stopped (or was killed) is started again first: its run resumes from
its last checkpoint.

A job ends ``done`` when its run completes, ``aborted`` on ``murmura job abort``, and
``failed`` with the reason when its coordinator stops on an error (no site came back in
time, a bad config), when the sites that answered cannot make up the job (too few accepted,
with each refusing site's reason), or past ``[federation] job_timeout``. The federation then
serves the next job. The coordinator's log lines while a job runs also go to the job's
``job.log`` (``murmura job logs``).

A tree job's coordinator is the tree's root: only the job's edges may join it. The job is
offered to its standing edges first; each edge that accepts serves its sites on an address
of its own, and each site is then offered its edge's address. The job fails when an edge
refuses, when an edge has not accepted within ``answer_timeout`` (it is not connected, or
connected as a site), or when too few sites under an edge accept.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from murmura.console import say
from murmura.errors import MurmuraError
from murmura.federation.config import FederationConfig, job_server, parse_job_tree
from murmura.federation.store import Job, JobStore, SiteAnswer
from murmura.federation.tree import JobTree
from murmura.ops.audit import AuditLedger

log = logging.getLogger(__name__)
CURRENT_JOB: contextvars.ContextVar[str | None] = contextvars.ContextVar("job", default=None)
SITE_SEEN_S = 15.0
"""A site that asked for jobs within this long counts as connected."""


def job_dir(state_dir: Path, job_id: str) -> Path:
    """The state dir of one job's coordinator."""
    return state_dir / "jobs" / job_id


@dataclass(slots=True)
class ActiveJob:
    """A running job: where its rounds are served, and what it needs."""

    job: Job
    address: str
    need: int
    """Sites that must accept it: ``max([server] min_nodes, [strategy] min_clients)``."""
    started: float
    offered: set[str] = field(default_factory=set)
    """Sites the job was offered to: pending until they answer or ``answer_timeout`` passes,
    even while one reads its data for longer than ``SITE_SEEN_S`` without polling."""
    tree: JobTree | None = None
    """A tree job's edges and their sites; None for a star job."""
    edges: dict[str, tuple[str, float]] = field(default_factory=dict)
    """Each edge that accepted the tree job: where it serves its sites, and since when."""

    def address_for(self, name: str, role: str) -> str | None:
        """Where ``name`` (asking as ``role``) takes part in this job; None: not (yet) in it.

        A star job's rounds are served at ``address`` to sites; a tree job's root serves its
        edges, and each edge its own sites, once that edge has accepted the job.
        """
        if self.tree is None:
            return None if role == "edge" else self.address
        if name in self.tree.edges:
            return self.address if role == "edge" else None
        edge = self.tree.edge_of(name)
        if edge is None or role == "edge" or edge not in self.edges:
            return None
        return self.edges[edge][0]


class JobLogHandler(logging.Handler):
    """Copies each log record made while a job runs into that job's ``job.log``."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(logging.INFO)
        self.state_dir = state_dir
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        """Append the record to the job's log (records of no job are not kept here)."""
        job = CURRENT_JOB.get()
        if job is None:
            return
        try:
            with open(job_dir(self.state_dir, job) / "job.log", "a") as fh:
                fh.write(self.format(record) + "\n")
        except OSError:
            self.handleError(record)


class JobRunner:
    """The federation's scheduler: the queue in, coordinators out, statuses back."""

    def __init__(
        self, fed: FederationConfig, store: JobStore, ledger: AuditLedger, insecure: bool
    ) -> None:
        self.fed, self.store, self.ledger, self.insecure = fed, store, ledger, insecure
        self.active: dict[str, ActiveJob] = {}
        self.sites: dict[str, float] = {}
        """Site name -> when it last asked for jobs (monotonic)."""
        self.roles: dict[str, str] = {}
        """Site name -> what it last asked as: ``worker`` (a site) or ``edge``."""
        self._changed = asyncio.Event()
        self._building = asyncio.Lock()

    # -- what the service asks ---------------------------------------------------------
    def notify(self) -> None:
        """Wake every waiting site: a job started or ended."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout_s: float) -> None:
        """Wait until something changes, or ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    def seen(self, site: str, role: str = "worker") -> None:
        """Site ``site`` asked for jobs now, as ``role`` (a standing ``edge``, or a site)."""
        self.sites[site] = time.monotonic()
        self.roles[site] = role

    def connected(self) -> list[str]:
        """Sites that asked for jobs lately."""
        now = time.monotonic()
        return sorted(s for s, t in self.sites.items() if now - t < SITE_SEEN_S)

    # -- the queue -----------------------------------------------------------------------
    async def serve(self) -> None:
        """Run jobs until cancelled: interrupted ones first, then the queue, oldest first."""
        tasks: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                for done in [j for j, t in tasks.items() if t.done()]:
                    del tasks[done]
                while len(tasks) < self.fed.federation.max_concurrent_jobs:
                    nxt = self._next(set(tasks))
                    if nxt is None:
                        break
                    ctx = contextvars.copy_context()
                    ctx.run(CURRENT_JOB.set, nxt.id)
                    tasks[nxt.id] = asyncio.create_task(self._run(nxt), context=ctx)
                await self.changed(0.5)
        finally:
            for t in tasks.values():
                t.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    def _next(self, busy: set[str]) -> Job | None:
        """The job to start next: one left running by a previous process, else the oldest."""
        for status in ("running", "queued"):
            for job in self.store.jobs(status):
                if job.id not in busy:
                    return job
        return None

    async def _run(self, job: Job) -> None:
        """Run one job to its end and record how it ended."""
        resumed = job.status == "running"
        job_dir(self.fed.state_dir, job.id).mkdir(parents=True, exist_ok=True)
        if not resumed:
            self.store.start(job.id)
        what = "resumed" if resumed else "started"
        say(log, "job", f"job {job.id} ({job.name}, by {job.submitter}): {what}",
            node="federation", job=job.id, status="running")  # fmt: skip
        try:
            status, reason = await self._coordinate(job)
        except MurmuraError as exc:
            status, reason = "failed", str(exc)
        except asyncio.CancelledError:  # the federation stops: the job resumes at restart
            self.active.pop(job.id, None)
            raise
        except (Exception, SystemExit) as exc:  # a job's defect must not stop the federation
            log.exception("job %s: failed", job.id)
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
        self.active.pop(job.id, None)
        self.store.end(job.id, status, reason)
        self.ledger.append(job.id, 0, "coordinator", "job_end", status=status, reason=reason)
        text = f"job {job.id}: {status}{f': {reason}' if reason else ''}"
        level = logging.WARNING if status == "failed" else logging.INFO
        say(log, "job", text, node="federation", job=job.id, status=status, level=level)
        self.notify()

    async def _coordinate(self, job: Job) -> tuple[str, str]:
        """Build the job's coordinator, serve it, and watch it: (end status, reason)."""
        from murmura.node.deploy import build_coordinator

        cfg, timing, tree = parse_job_tree(job.config, job.id)
        section = job_server(self.fed, timing, job_dir(self.fed.state_dir, job.id))
        need = max(section.min_nodes, cfg.strategy.min_clients)
        # the statistics phase waits for min_nodes: as many sites as the first round, not
        # whichever site joined first (its figures alone would scale every site's features)
        section = section.model_copy(update={"min_nodes": need})
        if tree is not None:  # the root of a tree: every edge of the job, and only those
            need = len(tree.edges)
            section = section.model_copy(update={"min_nodes": need, "allowlist": [*tree.edges]})
        async with self._building:  # one at a time: the model init seeds torch's global RNG
            coordinator = await asyncio.to_thread(build_coordinator, cfg, section, self.insecure)
        task = asyncio.create_task(coordinator.run())
        try:
            while coordinator.port == 0 and not task.done():
                await asyncio.sleep(0.05)
            if not task.done():
                assert coordinator.run_id is not None
                self.store.set_run(job.id, coordinator.run_id)
                address = f"{section.host}:{coordinator.port}"
                self.active[job.id] = ActiveJob(job, address, need, time.monotonic(), tree=tree)
                self.notify()
            return await self._watch(job, task)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, MurmuraError):
                    await task

    async def _watch(self, job: Job, task: asyncio.Task[Any]) -> tuple[str, str]:
        """Wait for the run; stop it on abort, on too few acceptances, or past the timeout."""
        limit = self.fed.federation.job_timeout
        start = time.monotonic()
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            if task.done():
                break
            admin = self.store.get(job.id).abort_by
            if admin:
                return "aborted", f"aborted by {admin}"
            short = self._too_few(job.id)
            if short is not None:
                return "failed", short
            if time.monotonic() - start > limit:
                return "failed", f"timeout: ran past [federation] job_timeout = {limit:g} s"
        result = task.result()
        acc = result.summary.get("final_test_accuracy")
        fed_acc = result.summary.get("final_federated_accuracy")
        shown = acc if acc is not None else fed_acc
        return "done", (
            f"{result.summary.get('rounds')} rounds, final accuracy "
            f"{'-' if not isinstance(shown, float) else format(shown, '.4f')}"
        )

    def _too_few(self, job_id: str) -> str | None:
        """Why the job cannot run, once the sites that answered cannot make it up; else None."""
        active = self.active.get(job_id)
        if active is None:
            return None
        answers = self.store.answers(job_id)
        if active.tree is not None:
            return self._too_few_tree(active, active.tree, {a.site: a for a in answers})
        accepted = [a.site for a in answers if a.accepted]
        refused = [a for a in answers if not a.accepted]
        answered = {a.site for a in answers}
        sites = [s for s in self.connected() if self.roles.get(s) != "edge"]  # edges: tree jobs
        pending = [s for s in {*sites, *active.offered} if s not in answered]
        late = time.monotonic() - active.started > self.fed.federation.answer_timeout
        if not refused or len(accepted) >= active.need or (pending and not late):
            return None
        why = "; ".join(f"{a.site} refused: {a.reason}" for a in refused)
        return f"too few sites accepted ({len(accepted)}, needs {active.need}): {why}"

    def _too_few_tree(
        self, active: ActiveJob, tree: JobTree, answers: dict[str, SiteAnswer]
    ) -> str | None:
        """Why a tree job cannot run: an edge refused or is missing, or too few of its sites."""
        timeout = self.fed.federation.answer_timeout
        now = time.monotonic()
        for edge in tree.edges:
            got = answers.get(edge)
            if got is not None and not got.accepted:
                return f"edge {edge} refused: {got.reason}"
            if edge not in active.edges and now - active.started > timeout:
                return (
                    f"edge {edge} {self._missing(edge)} within [federation] answer_timeout = "
                    f"{timeout:g} s; a tree job needs every edge it names"
                )
        connected = set(self.connected())
        for edge, (_, since) in active.edges.items():
            sites = tree.sites(edge)
            accepted = [s for s in sites if s in answers and answers[s].accepted]
            refused = [answers[s] for s in sites if s in answers and not answers[s].accepted]
            pending = [s for s in sites if s not in answers and s in connected | active.offered]
            late = now - since > timeout
            if not refused or len(accepted) >= tree.need(edge) or (pending and not late):
                continue
            why = "; ".join(f"{a.site} refused: {a.reason}" for a in refused)
            return (
                f"too few sites accepted under edge {edge} ({len(accepted)}, needs "
                f"{tree.need(edge)}): {why}"
            )
        return None

    def _missing(self, edge: str) -> str:
        """Why ``edge`` has not accepted: never connected, connected as a site, or silent."""
        if edge not in self.connected():
            return "is not connected (no `murmura edge --standing` of that name asked for jobs)"
        if self.roles.get(edge) != "edge":
            return "asks for jobs as a site, not as a standing edge (`murmura edge --standing`)"
        return "did not accept"
