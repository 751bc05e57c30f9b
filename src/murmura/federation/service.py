"""The job API (``murmura.v1.Federation``): admins manage jobs, sites ask for them.

Every call is identified by the caller's certificate (mTLS). ``Submit``, ``List``,
``Status``, ``Abort``, ``Logs`` and ``Download`` need an ``admin`` certificate (and a name in
``[federation] admins`` when set): any other gets PERMISSION_DENIED before the request is
read. Each submit, abort and download is a record of the federation's signed audit ledger
naming the admin. ``Offer`` and ``Answer`` are the sites' (worker certificates, on the
``[server] allowlist`` when set): a site long-polls ``Offer`` for a running job it has not
answered (or, restarted, is no longer running), checks it against its policy and tells
``Answer``; ``Offer`` also tells a site to stop a job that has ended. A standing edge (an
edge certificate, asking ``as = "edge"``) is offered the tree jobs that name it, at the
root's address, and answers with the address it serves its sites on; each of its sites is
then offered the job at that address.

Refusals are logged through a ``RepeatLimiter`` (one line per identity and code a window, then
one count), and each admin's Submit, Abort and Download pass a token bucket (``rate``) first:
over ``[federation] max_requests_per_minute`` a call gets RESOURCE_EXHAUSTED and writes nothing.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias

import grpc
from grpc import aio

from murmura.console import say
from murmura.errors import ConfigError, MurmuraError, ProtocolError
from murmura.federation import wire
from murmura.federation.config import FederationConfig, parse_job
from murmura.federation.rate import RequestLimiter
from murmura.federation.runner import JobRunner, job_dir
from murmura.federation.store import JobStore
from murmura.ops.audit import AuditLedger, read_records
from murmura.transport import keys
from murmura.transport.grpc_server import NODE_HEADER
from murmura.transport.repeats import Repeat, RepeatLimiter

log = logging.getLogger(__name__)
CHUNK = 512 * 1024
OUTPUTS = ("model.safetensors", "metrics.jsonl", "summary.json", "config.toml", "stats.json")
MAX_LOG_BYTES = 1 << 20
Context: TypeAlias = "aio.ServicerContext[Any, Any]"


class FederationService:
    """Handlers of the job API over the federation's store, runner and ledger."""

    def __init__(
        self, fed: FederationConfig, store: JobStore, runner: JobRunner, ledger: AuditLedger
    ) -> None:
        self.fed, self.store, self.runner, self.ledger = fed, store, runner, ledger
        self.tls = fed.server.cert is not None
        self.repeats = RepeatLimiter()
        f = fed.federation
        self.requests = RequestLimiter(f.max_requests_per_minute, f.request_burst)

    # -- refusals ----------------------------------------------------------------------
    async def _refuse(self, context: Context, name: str, code: str, why: str) -> None:
        """Log a refusal (only the first of its identity and code a window), then abort."""
        self._report_repeats(self.repeats.closed())
        who = name or "-"
        if self.repeats.first(who, code, {"repeat_of": "refused", "code": code, "reason": why}):
            log.warning("job API refused %s (%s): %s", who, code, why)
        await context.abort(grpc.StatusCode[code], why)

    def flush_repeats(self) -> None:
        """Log the counts of refusals still in a window (at shutdown)."""
        self._report_repeats(self.repeats.drain())

    @staticmethod
    def _report_repeats(repeats: list[Repeat]) -> None:
        for rep in repeats:
            log.warning("job API refused %s: %s", rep.identity, rep)

    async def _admit(self, context: Context, admin: str, method: str) -> None:
        """Refuse a write call (RESOURCE_EXHAUSTED) over the admin's request rate."""
        wait = self.requests.admit(admin)
        if wait > 0:
            limit = self.fed.federation.max_requests_per_minute
            why = (f"{method}: admin {admin!r} is over [federation] max_requests_per_minute "
                   f"= {limit:g}; retry in {wait:.1f} s")  # fmt: skip
            await self._refuse(context, admin, "RESOURCE_EXHAUSTED", why)

    # -- identity ----------------------------------------------------------------------
    async def _caller(self, context: Context) -> tuple[str, str]:
        """(name, role) of the caller: its certificate's, or a header's without TLS."""
        if not self.tls:
            md = dict(context.invocation_metadata() or ())
            return str(md.get(NODE_HEADER, "")), "worker"
        pems = context.auth_context().get("x509_pem_cert") or []
        if not pems:
            await self._refuse(context, "", "UNAUTHENTICATED", "no client certificate")
        return keys.identity_of(bytes(pems[0]))

    async def _admin(self, context: Context) -> str:
        name, role = await self._caller(context)
        admins = self.fed.federation.admins
        if role != keys.ADMIN_ROLE or not self.tls:
            why = (
                "no TLS: admins are known only by their certificates"
                if not self.tls
                else (f"certificate {name!r} has role {role!r}; the job API needs an admin's")
            )
            await self._refuse(context, name, "PERMISSION_DENIED", why)
        if admins is not None and name not in admins:
            why = f"admin {name!r} is not in [federation] admins"
            await self._refuse(context, name, "PERMISSION_DENIED", why)
        return name

    async def _site(self, context: Context) -> str:
        name, role = await self._caller(context)
        allow = self.fed.server.allowlist
        if not name or role not in keys.CHILD_ROLES or (allow is not None and name not in allow):
            why = f"{name or '-'!r} (role {role!r}) may not take jobs here"
            await self._refuse(context, name, "PERMISSION_DENIED", why)
        return name

    # -- admin calls -------------------------------------------------------------------
    async def submit(self, req: dict[str, Any], context: Context, admin: str) -> dict[str, Any]:
        """Queue a job after checking its config as ``murmura server`` would."""
        config = wire.text(req, "config", wire.MAX_REQUEST_BYTES)
        name = wire.text(req, "name", 200) or "job"
        parse_job(config, name)  # a config error (a tree's edge tables too) is the admin's reason
        job = self.store.submit(name, admin, config)
        digest = hashlib.sha256(config.encode()).hexdigest()
        self.ledger.append(job.id, 0, admin, "job_submit", name=name, config_sha256=digest)
        say(log, "job", f"job {job.id} ({name}) queued by {admin}", node="federation",
            job=job.id, status="queued")  # fmt: skip
        self.runner.notify()
        return {"job": job.to_json()}

    async def list_jobs(self, req: dict[str, Any], context: Context, admin: str) -> dict[str, Any]:
        """Every job, oldest first."""
        return {"jobs": [j.to_json() for j in self.store.jobs()]}

    async def status(self, req: dict[str, Any], context: Context, admin: str) -> dict[str, Any]:
        """One job with each site's answer."""
        job = self.store.get(wire.text(req, "id", 64))
        return {"job": job.to_json(self.store.answers(job.id))}

    async def abort(self, req: dict[str, Any], context: Context, admin: str) -> dict[str, Any]:
        """Abort a queued or running job."""
        job = self.store.request_abort(wire.text(req, "id", 64), admin)
        self.ledger.append(job.id, 0, admin, "job_abort", status=job.status)
        say(log, "job", f"job {job.id}: abort asked by {admin}", node="federation", job=job.id)
        self.runner.notify()
        return {"job": job.to_json()}

    async def logs(self, req: dict[str, Any], context: Context, admin: str) -> dict[str, Any]:
        """The last MiB of the job's log."""
        job = self.store.get(wire.text(req, "id", 64))
        path = job_dir(self.fed.state_dir, job.id) / "job.log"
        data = b""
        if path.exists():
            with open(path, "rb") as fh:
                fh.seek(max(0, path.stat().st_size - MAX_LOG_BYTES))
                data = fh.read()
        return {"log": data.decode(errors="replace")}

    async def download(self, req: dict[str, Any], context: Context) -> AsyncIterator[bytes]:
        """Stream the job's outputs: final model, metrics, summary, plots, ledger extract."""
        admin = await self._admin(context)
        await self._admit(context, admin, "Download")
        try:
            job = self.store.get(wire.text(wire.decode(req["raw"]), "id", 64))
        except (MurmuraError, ProtocolError) as exc:
            await self._refuse(context, admin, "INVALID_ARGUMENT", str(exc))
            raise
        files = job_outputs(self.fed.state_dir, job.id, job.run_id)
        self.ledger.append(job.id, 0, admin, "job_download", files=len(files))
        for name, data in files.items():
            for start in range(0, max(len(data), 1), CHUNK):
                piece = base64.b64encode(data[start : start + CHUNK]).decode()
                yield wire.encode({"file": name, "offset": start, "data": piece})

    # -- site calls --------------------------------------------------------------------
    async def offer(self, req: dict[str, Any], context: Context, site: str) -> dict[str, Any]:
        """A job for the site to answer or stop, waiting up to ``wait_ms`` for one."""
        running = req.get("running", {})
        if not isinstance(running, dict) or not all(isinstance(a, str) for a in running.values()):
            raise ProtocolError("field 'running' must map job ids to addresses")
        wait = min(float(req.get("wait_ms", 0)) / 1000, 20.0)
        role = await self._asks_as(req, context, site)
        self.runner.seen(site, role)
        reply = self._offer_now(site, role, running)
        if not reply:
            await self.runner.changed(wait)
            self.runner.seen(site, role)
            reply = self._offer_now(site, role, running)
        return reply

    async def _asks_as(self, req: dict[str, Any], context: Context, site: str) -> str:
        """``edge`` for a standing edge (its certificate's role under TLS), else ``worker``."""
        wants = req.get("as", "worker")
        if wants not in ("worker", "edge"):
            raise ProtocolError("field 'as' must be 'worker' or 'edge'")
        if not self.tls:
            return str(wants)
        _, role = await self._caller(context)
        if wants == "edge" and role != "edge":
            why = f"{site!r} has a {role} certificate; a standing edge needs an edge certificate"
            await self._refuse(context, site, "PERMISSION_DENIED", why)
        return "edge" if role == "edge" else "worker"

    def _offer_now(self, site: str, role: str, running: dict[str, str]) -> dict[str, Any]:
        stop = [j for j in running if j not in self.runner.active]
        if stop:
            return {"stop": stop}
        for job_id, active in self.runner.active.items():
            address = active.address_for(site, role)
            if address is None:
                continue
            answered = {a.site: a.accepted for a in self.store.answers(job_id)}
            if running.get(job_id) == address or answered.get(site) is False:
                continue
            job = active.job
            active.offered.add(site)
            return {"job": {"id": job_id, "name": job.name, "submitter": job.submitter,
                            "config": job.config, "address": address}}  # fmt: skip
        return {}

    async def answer(self, req: dict[str, Any], context: Context, site: str) -> dict[str, Any]:
        """Record a site's acceptance or refusal (with its reason) of a job."""
        job = self.store.get(wire.text(req, "id", 64))
        accepted = req.get("accepted")
        if not isinstance(accepted, bool):
            raise ProtocolError("field 'accepted' must be true or false")
        reason = wire.text(req, "reason", 2000) if not accepted else ""
        self.store.answer(job.id, site, accepted, reason)
        active = self.runner.active.get(job.id)
        tree = active.tree if active is not None else None
        as_edge = tree is not None and site in tree.edges and self.runner.roles.get(site) == "edge"
        if accepted and as_edge and active is not None:  # its sites get the job at its address
            address = wire.text(req, "address", 300)
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ProtocolError(f"field 'address' must be HOST:PORT, not {address!r}")
            active.edges[site] = (address, time.monotonic())
            self.runner.notify()
        answer = "accepted" if accepted else f"refused: {reason}"
        say(log, "answer", f"job {job.id}: site {site} {answer}", node="federation",
            job=job.id, site=site, accepted=accepted)  # fmt: skip
        return {}


def job_outputs(state_dir: Path, job_id: str, run_id: str) -> dict[str, bytes]:
    """The files ``murmura job download`` gets, by name: the run's outputs and its ledger."""
    out: dict[str, bytes] = {}
    root = job_dir(state_dir, job_id)
    run = root / "runs" / run_id if run_id else None
    if run is not None and run.is_dir():
        for name in OUTPUTS:
            if (run / name).is_file():
                out[name] = (run / name).read_bytes()
        for png in sorted(run.glob("*.png")):
            out[png.name] = png.read_bytes()
    ledger = root / "audit.sqlite"
    if ledger.exists():
        rows = [json.dumps(dataclasses.asdict(r)) for r in read_records(ledger)]
        out["ledger.jsonl"] = ("\n".join(rows) + "\n").encode()
        if (root / "audit.pub").exists():
            out["audit.pub"] = (root / "audit.pub").read_bytes()
    log_path = root / "job.log"
    if log_path.exists():
        out["job.log"] = log_path.read_bytes()
    return out


Handler = Callable[[dict[str, Any], Context, str], Awaitable[dict[str, Any]]]


def handlers(svc: FederationService) -> grpc.GenericRpcHandler:
    """The gRPC handlers: each checks its caller, decodes, runs, and encodes the reply."""

    def unary(fn: Handler, who: Callable[[Context], Awaitable[str]], write: str = "") -> Any:
        async def call(raw: bytes, context: Context) -> bytes:
            caller = await who(context)
            if write:  # a ledger record (and a job row) per call: rate-limited
                await svc._admit(context, caller, write)
            try:
                reply = await fn(wire.decode(raw), context, caller)
            except ConfigError as exc:  # the job's config, or an unknown job: the caller's
                code = "NOT_FOUND" if str(exc).startswith("no job") else "FAILED_PRECONDITION"
                await context.abort(grpc.StatusCode[code], str(exc))
            except (ProtocolError, ValueError, TypeError, KeyError) as exc:  # a malformed request
                why = f"{type(exc).__name__}: {exc}"
                await svc._refuse(context, caller, "INVALID_ARGUMENT", why)
            return wire.encode(reply)

        return grpc.unary_unary_rpc_method_handler(call, None, None)

    async def download(raw: bytes, context: Context) -> AsyncIterator[bytes]:
        async for frame in svc.download({"raw": raw}, context):
            yield frame

    admin, site = svc._admin, svc._site
    return grpc.method_handlers_generic_handler(
        wire.SERVICE,
        {
            "Submit": unary(svc.submit, admin, "Submit"),
            "List": unary(svc.list_jobs, admin),
            "Status": unary(svc.status, admin),
            "Abort": unary(svc.abort, admin, "Abort"),
            "Logs": unary(svc.logs, admin),
            "Download": grpc.unary_stream_rpc_method_handler(download, None, None),
            "Offer": unary(svc.offer, site),
            "Answer": unary(svc.answer, site),
        },
    )
