"""A standing site: ``murmura client --site site.toml`` (or ``--partition i/n --standing``).

The site asks the federation's coordinator for jobs (a long poll), and for each one:

1. refuses a job that names code to import or a task not installed here (``job_guard``);
2. checks it against the site's ``[policy]`` and privacy budget before touching any data
   (``admission``);
3. builds its client on the local data, exactly as ``murmura client --site --config`` does,
   and answers: accepted, or refused with the reason (the admin sees it in ``job status``);
   a job with differential privacy is charged to the site's budget as the site releases
   (``site_guard.ChargedClient``: a site that joins after the last round released nothing);
4. runs the job's worker in a thread against the job's own coordinator address.

It stays up after each job. When the coordinator goes away it retries with exponential
backoff and jitter; a job resumed at a new address is offered again and the site rejoins it.
A job that ended (done, failed, aborted) is stopped. Ctrl-C stops the workers and exits 0;
the same command reconnects and rejoins the running job.

The loop (``StandingNode``) is shared with the standing edge (``federation.edge_loop``),
which runs an edge aggregator for each tree job instead of a worker.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from murmura.console import say
from murmura.errors import IdentityError, MurmuraError
from murmura.federation.config import parse_job
from murmura.federation.link import FederationError, FederationLink
from murmura.federation.site_guard import Charge, free
from murmura.node import progress
from murmura.node.instructions import InstructionLimits
from murmura.node.worker import FitClient, Worker, WorkerStats
from murmura.transport import keys
from murmura.transport.dial_check import Unreachable
from murmura.transport.grpc_client import CoordinatorLink, backoff_delays

log = logging.getLogger(__name__)
Admission = Callable[[Any, str], str | Charge]
"""(job config, submitter) -> the site's reason to refuse, or how to charge the job."""
RETRY = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN")


def accept_all(cfg: Any, submitter: str) -> str | Charge:
    """The admission of a site without a policy: every job whose names pass the guard."""
    return free


class JobRole(Protocol):
    """What a standing node runs for one job: a site's ``Worker``, an edge's ``EdgeJob``."""

    def run(self) -> WorkerStats:
        """Work for the job until it ends or ``close``."""
        ...

    def close(self) -> None:
        """Stop working for the job."""
        ...


@dataclass(slots=True)
class Running:
    """A job this site works on: its worker and where its rounds are served."""

    address: str
    worker: JobRole
    run_id: Callable[[], str | None]
    """The coordinator's run id, once known (for the final line)."""
    thread: threading.Thread = field(init=False)
    stopped: bool = False
    """Stopped by the site (the job ended, or moved): an error of its closed link is expected."""


class StandingNode:
    """Waits for jobs, answers them, runs the accepted ones; never exits on its own.

    What it runs for a job is its subclass's ``_start``: a site's worker (``StandingSite``),
    a standing edge's edge aggregator (``federation.edge_loop.StandingEdge``).
    """

    role = "worker"
    """What it asks for jobs as: a site (``worker``) or a standing ``edge``."""

    def __init__(self, target: str, node: str, credentials: keys.Credentials | None,
                 wait_s: float = 10.0) -> None:  # fmt: skip
        self.target, self.node, self.credentials, self.wait_s = target, node, credentials, wait_s
        self.jobs: dict[str, Running] = {}
        self.finished: dict[str, str] = {}
        """Jobs whose worker has stopped, by address: not offered again there until they end."""
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def run(self) -> None:
        """Serve jobs until ``close`` (or a refusal of this site's certificate)."""
        delays = backoff_delays(0.5, 10.0, random.Random())
        link: FederationLink | None = None
        down = True
        while not self._stop.is_set():
            try:
                if link is None:
                    link = FederationLink(self.target, self.credentials, self.node)
                reply = link.call("Offer", self._asking(), timeout_s=self.wait_s + 10)
                if down:
                    say(log, "joined", f"waiting for jobs from {self.target}", node=self.node,
                        target=self.target)  # fmt: skip
                delays, down = backoff_delays(0.5, 10.0, random.Random()), False
                self._handle(link, reply)
            except (FederationError, Unreachable) as exc:
                code = exc.code if isinstance(exc, FederationError) else "UNAVAILABLE"
                if code not in RETRY:
                    raise
                if link is not None:
                    link.close()
                link, down = None, True
                delay = next(delays)
                log.warning("node=%s round=-: coordinator at %s: %s; retrying in %.1f s",
                            self.node, self.target, code, delay)  # fmt: skip
                self._stop.wait(delay)

    def close(self) -> None:
        """Stop asking for jobs and stop every running worker."""
        self._stop.set()
        with self._lock:
            running = list(self.jobs.values())
        for r in running:
            r.stopped = True
            r.worker.close()

    def _asking(self) -> dict[str, Any]:
        with self._lock:
            running = {**self.finished, **{j: r.address for j, r in self.jobs.items()}}
        return {"wait_ms": int(self.wait_s * 1000), "running": running, "as": self.role}

    def _handle(self, link: FederationLink, reply: dict[str, Any]) -> None:
        for job_id in reply.get("stop", []):
            self._stop_job(str(job_id), "the job has ended")
        offer = reply.get("job")
        if isinstance(offer, dict):
            self._take(link, offer)

    def _stop_job(self, job_id: str, why: str) -> None:
        with self._lock:
            running = self.jobs.pop(job_id, None)
            self.finished.pop(job_id, None)
        if running is not None:
            log.info("node=%s round=-: job %s: stopping (%s)", self.node, job_id, why)
            running.stopped = True
            running.worker.close()

    def _take(self, link: FederationLink, offer: dict[str, Any]) -> None:
        """Decide on an offered job, answer, and start its worker if accepted."""
        job_id, address = str(offer["id"]), str(offer["address"])
        self._stop_job(job_id, "offered again at a new address")
        try:
            answer = self._start(job_id, offer)
        except Exception as exc:  # the site stays up whatever a job does to its client
            reason = str(exc) if isinstance(exc, MurmuraError) else f"{type(exc).__name__}: {exc}"
            log.warning("node=%s round=-: job %s refused: %s", self.node, job_id, reason)
            link.call("Answer", {"id": job_id, "accepted": False, "reason": reason})
            return
        link.call("Answer", {"id": job_id, "accepted": True, **answer})
        log.info("node=%s round=-: job %s accepted; its rounds at %s", self.node, job_id, address)

    def _start(self, job_id: str, offer: dict[str, Any]) -> dict[str, Any]:
        """Start the offered job (raise the reason to refuse it); what the acceptance tells."""
        raise NotImplementedError

    def _launch(self, job_id: str, running: Running) -> None:
        """Run ``running`` in a thread of its own, as one of this node's jobs."""
        running.thread = threading.Thread(
            target=self._work, args=(job_id, running), name=f"job-{job_id}", daemon=True
        )
        with self._lock:
            self.jobs[job_id] = running
        running.thread.start()

    def _work(self, job_id: str, running: Running) -> None:
        try:
            stats = running.worker.run()
        except (MurmuraError, IdentityError, ValueError) as exc:  # ValueError: a closed channel
            if not (running.stopped and isinstance(exc, ValueError)):
                log.error("node=%s round=-: job %s stopped: %s", self.node, job_id, exc)
            return
        finally:
            with self._lock:
                if self.jobs.get(job_id) is running:
                    del self.jobs[job_id]
                    self.finished[job_id] = running.address
        text = f"job {job_id}: {stats.rounds} rounds trained, stopped: {stats.reason}"
        progress.finished(self.node, running.run_id(), text, stats.last_round)


class StandingSite(StandingNode):
    """A standing site: for each accepted job, a worker on the site's own data."""

    def __init__(
        self,
        target: str,
        node: str,
        credentials: keys.Credentials | None,
        make_client: Callable[[Any], FitClient],
        admission: Admission = accept_all,
        limits: InstructionLimits | None = None,
        wait_s: float = 10.0,
    ) -> None:
        super().__init__(target, node, credentials, wait_s)
        self.make_client, self.admission, self.limits = make_client, admission, limits

    def _start(self, job_id: str, offer: dict[str, Any]) -> dict[str, Any]:
        """Start the offered job's worker once accepted; what the acceptance tells (nothing)."""
        worker = self._prepare(offer)
        self._launch(job_id, Running(str(offer["address"]), worker, lambda: worker.link.run_id))
        return {}

    def _prepare(self, offer: dict[str, Any]) -> Worker:
        """The worker of an offered job, once the guard and the policy accepted it."""
        from murmura.compress.uplink import make_uplink

        text, job_id = str(offer["config"]), str(offer["id"])
        cfg, _ = parse_job(text, job_id)  # refuses a job naming code (job_guard) first
        verdict = self.admission(cfg, str(offer.get("submitter", "")))  # before any data
        if isinstance(verdict, str):
            raise MurmuraError(verdict)
        from murmura.federation.site_guard import ChargedClient, site_learner
        from murmura.node.site import RefusedSite

        client = self.make_client(cfg)  # reads the local data
        if not isinstance(client, RefusedSite):  # it releases nothing; charged as it releases
            client = ChargedClient(client, verdict, lambda: job_id, cfg, site_learner(client))
        link = CoordinatorLink(str(offer["address"]), self.node, self.credentials)
        return Worker(link, client, limits=self.limits, uplink=make_uplink(cfg, self.node))
