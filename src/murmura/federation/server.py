"""``murmura server federation.toml``: the standing federation's coordinator.

It serves the job API (``service``) on ``[server] host:port`` and runs the queued jobs
(``runner``) until stopped; Ctrl-C (or SIGTERM) stops the running job's coordinator as
``murmura server`` would (its run stays resumable), and the same command carries on: the
job is resumed from its checkpoint and the queue is served in order.
"""

from __future__ import annotations

import logging
from pathlib import Path

from grpc import aio

from murmura.console import say
from murmura.errors import ConfigError
from murmura.federation.config import FederationConfig
from murmura.federation.runner import JobLogHandler, JobRunner
from murmura.federation.service import FederationService, handlers
from murmura.federation.store import JobStore
from murmura.node import progress
from murmura.node.deploy import server_options
from murmura.ops.audit import AuditLedger
from murmura.transport.grpc_server import is_loopback, server_channel_options

log = logging.getLogger(__name__)


async def serve(fed: FederationConfig, insecure: bool = False) -> None:
    """Serve the job API and run jobs until cancelled."""
    opts = server_options(fed.server, insecure)  # TLS unless --insecure
    fed.state_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(fed.state_dir)
    ledger = AuditLedger.open(fed.state_dir)
    runner = JobRunner(fed, store, ledger, insecure)
    capture = JobLogHandler(fed.state_dir)
    logging.getLogger("murmura").addHandler(capture)
    server = aio.server(options=server_channel_options(opts))
    service = FederationService(fed, store, runner, ledger)
    server.add_generic_rpc_handlers((handlers(service),))
    address = f"{opts.host}:{opts.port}"
    try:
        if opts.credentials is None:
            if not is_loopback(opts.host):
                raise ConfigError(f"refusing to listen on {opts.host} without TLS (loopback only)")
            port = server.add_insecure_port(address)
        else:
            import grpc

            c = opts.credentials
            creds = grpc.ssl_server_credentials(
                [(c.key, c.cert)], root_certificates=c.ca, require_client_auth=True
            )
            port = server.add_secure_port(address, creds)
        await server.start()
        (fed.state_dir / "address").write_text(f"{opts.host}:{port}\n")
        queued = len(store.jobs("queued")) + len(store.jobs("running"))
        progress.listening("federation", f"{opts.host}:{port}", opts.credentials is not None, None)
        log.info("node=federation round=-: %d jobs waiting or to resume", queued)
        await runner.serve()
    finally:
        runner.notify()  # waiting sites get their answer before the server stops
        await server.stop(grace=1.0)
        service.flush_repeats()  # the counts of refusals still in a window
        logging.getLogger("murmura").removeHandler(capture)
        store.close()
        ledger.close()


def run_federation(path: Path, insecure: bool) -> None:
    """``murmura server federation.toml``: serve until Ctrl-C, then exit 0 (resumable)."""
    import asyncio

    from murmura.federation.config import load_federation
    from murmura.node.shutdown import Interrupted, leave, raising_signals, until_signalled

    try:
        with raising_signals():
            fed = load_federation(path)
            asyncio.run(until_signalled(serve(fed, insecure)))
    except Interrupted as exc:
        text = f"stopped by {exc.signame}; the same command resumes its jobs"
        say(log, "interrupted", text, node="federation", signal=exc.signame)
        leave(0)
