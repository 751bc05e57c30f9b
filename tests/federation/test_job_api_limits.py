"""The job API under a flood (reliability check 31), over real mutual TLS on 127.0.0.1.

The service runs in this process (``aio`` server, the federation's own handlers, store and
ledger); the callers are real certificates. 500 Submits from a worker certificate are
refused with one log line and one count, and write nothing; an admin past
``[federation] request_burst`` gets RESOURCE_EXHAUSTED and no job row or ledger record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc import aio
from portpool import free_port

from murmura.federation import wire
from murmura.federation.config import FederationConfig, FederationSection
from murmura.federation.runner import JobRunner
from murmura.federation.service import FederationService, handlers
from murmura.federation.store import JobStore
from murmura.node.deploy import ServerSection
from murmura.ops.audit import AuditLedger, read_records
from murmura.transport import keys

pytestmark = pytest.mark.network

JOB = """
[run]
name = "digits-{n}"
rounds = 1
[task]
name = "digits"
[partition]
kind = "iid"
num_clients = 2
[strategy]
name = "fedavg"
"""
SERVICE_LOG = "murmura.federation.service"
Call = Callable[[str, str, dict[str, object]], Awaitable[tuple[str, str]]]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    keys.init_ca(root)
    for name, role in [("coordinator", "coordinator"), ("site-a", "worker"),
                       ("alice", "admin"), ("bob", "admin")]:  # fmt: skip
        keys.issue(root, name, role)
    return root


def _serve(
    pki: Path, state: Path, body: Callable[[FederationService, Call], Awaitable[None]]
) -> None:
    """Serve the job API over mTLS and run ``body(service, call)``; ``call`` returns (code, why)."""
    f = keys.node_files(pki, "coordinator")
    server_cfg = ServerSection(cert=str(f.cert), key=str(f.key), ca=str(f.ca), state_dir=str(state))
    fed = FederationConfig(
        server_cfg, FederationSection(max_requests_per_minute=1, request_burst=3)
    )

    async def main() -> None:
        state.mkdir(parents=True, exist_ok=True)
        store, ledger = JobStore(state), AuditLedger.open(state)
        svc = FederationService(fed, store, JobRunner(fed, store, ledger, False), ledger)
        server = aio.server()
        server.add_generic_rpc_handlers((handlers(svc),))
        c = keys.Credentials.load(f.cert, f.key, f.ca)
        tls = grpc.ssl_server_credentials([(c.key, c.cert)], c.ca, require_client_auth=True)
        port = server.add_secure_port(f"127.0.0.1:{free_port()}", tls)
        await server.start()
        channels: dict[str, aio.Channel] = {}

        async def call(who: str, method: str, msg: dict[str, object]) -> tuple[str, str]:
            if who not in channels:
                n = keys.node_files(pki, who)
                w = keys.Credentials.load(n.cert, n.key, n.ca)
                creds = grpc.ssl_channel_credentials(w.ca, w.key, w.cert)
                opts = [("grpc.ssl_target_name_override", "coordinator")]
                channels[who] = aio.secure_channel(f"127.0.0.1:{port}", creds, opts)
            stub = channels[who].unary_unary(f"/{wire.SERVICE}/{method}")
            try:
                await stub(wire.encode(msg), timeout=10)
            except aio.AioRpcError as exc:
                return exc.code().name, str(exc.details())
            return "OK", ""

        try:
            await body(svc, call)
        finally:
            for ch in channels.values():
                await ch.close()
            await server.stop(0)
            store.close()
            ledger.close()

    asyncio.run(main())


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == SERVICE_LOG]


def test_a_flood_of_refused_submits_logs_two_lines_and_writes_nothing(
    pki: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(svc: FederationService, call: Call) -> None:
        with caplog.at_level(logging.WARNING, logger=SERVICE_LOG):
            submit = {"name": "j", "config": JOB.format(n=0)}
            codes = [(await call("site-a", "Submit", submit))[0] for _ in range(500)]
            assert codes == ["PERMISSION_DENIED"] * 500
            (first,) = _warnings(caplog)  # one line for 500 refusals while the window is open
            assert "site-a (PERMISSION_DENIED)" in first and "role 'worker'" in first
            svc.flush_repeats()  # at shutdown: the count of the rest
            (summary,) = _warnings(caplog)[1:]
            assert summary.startswith("job API refused site-a: refused repeated 499 more times")
        assert svc.store.jobs() == []

    _serve(pki, tmp_path / "state", body)
    assert list(read_records(tmp_path / "state" / "audit.sqlite")) == []


def test_an_admin_over_its_request_rate_gets_resource_exhausted_and_writes_nothing(
    pki: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(svc: FederationService, call: Call) -> None:
        with caplog.at_level(logging.WARNING, logger=SERVICE_LOG):
            replies = [await call("alice", "Submit", {"name": f"j{i}", "config": JOB.format(n=i)})
                       for i in range(10)]  # fmt: skip
            # burst 3, then one a minute: the 4th to 10th are refused before any write
            assert [code for code, _ in replies] == ["OK"] * 3 + ["RESOURCE_EXHAUSTED"] * 7
            assert "max_requests_per_minute = 1; retry in" in replies[3][1]
            assert (await call("alice", "List", {}))[0] == "OK"  # reads are not limited
            assert (await call("alice", "Abort", {"id": "x"}))[0] == "RESOURCE_EXHAUSTED"
            assert (await call("bob", "Submit", {"name": "b", "config": JOB.format(n=99)}))[
                0
            ] == "OK"
            assert len(_warnings(caplog)) == 1  # the first refusal; the rest are counted
        assert [j.submitter for j in svc.store.jobs()] == ["alice"] * 3 + ["bob"]

    _serve(pki, tmp_path / "state", body)
    records = list(read_records(tmp_path / "state" / "audit.sqlite"))
    assert [(r.event, r.node) for r in records] == [("job_submit", "alice")] * 3 + [
        ("job_submit", "bob")
    ]
