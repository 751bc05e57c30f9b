"""``murmura edge --standing``: a standing edge's identity and policy, until Ctrl-C."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from murmura.console import say
from murmura.errors import MurmuraError
from murmura.transport import keys

log = logging.getLogger(__name__)


def standing_edge(
    server: str,
    tls: tuple[Path | None, Path | None, Path | None],
    name: str | None,
    insecure: bool,
    host: str,
    port: int,
    state_dir: Path,
    policy: Path | None,
) -> None:
    """Serve the federation's tree jobs as an edge until Ctrl-C, then exit 0."""
    from murmura.federation.edge_loop import StandingEdge, edge_policy
    from murmura.node.cli import fail
    from murmura.node.shutdown import Interrupted, leave, raising_signals

    loop: StandingEdge | None = None
    node = name or "edge"
    try:
        with raising_signals():
            cert, key, ca = tls
            creds: keys.Credentials | None = None
            if insecure:
                if name is None:
                    raise typer.BadParameter("--standing with --insecure needs --name")
            elif cert and key and ca:
                creds = keys.Credentials.load(cert, key, ca)
                node = creds.name
            else:
                raise typer.BadParameter("--cert, --key and --ca are required (or --insecure)")
            rules = edge_policy(policy) if policy is not None else None
            loop = StandingEdge(server, node, creds, host, port, state_dir, rules)
            loop.run()
    except MurmuraError as exc:
        raise fail(exc, node) from None
    except Interrupted as exc:
        if loop is not None:
            loop.close()
        text = f"stopped by {exc.signame}; the same command waits for jobs again"
        say(log, "interrupted", text, node=node, signal=exc.signame)
        leave(0)
