"""Run a standing node from the command line: its identity, then jobs until Ctrl-C, exit 0.

Shared by ``murmura client --site/--standing`` and ``murmura edge --standing``: the same
credential rules, the same error handling, the same way of stopping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import typer

from murmura.console import say
from murmura.errors import MurmuraError
from murmura.federation.site_loop import StandingNode
from murmura.transport import keys

log = logging.getLogger(__name__)


def run_standing(
    build: Callable[[str, keys.Credentials | None], StandingNode],
    tls: tuple[Path | None, Path | None, Path | None],
    name: str | None,
    insecure: bool,
    flag: str,
    default_node: str,
    fail: Callable[[Exception, str], typer.Exit],
) -> None:
    """Build the node with its name and credentials and run it until Ctrl-C, then exit 0.

    ``flag`` names the option that made it standing (for the ``--insecure`` without ``--name``
    message); ``default_node`` names it in messages before its certificate is read; ``fail``
    turns an expected error into the CLI's one ``error:`` line (``murmura.node.cli.fail``).
    """
    from murmura.node.shutdown import Interrupted, leave, raising_signals

    loop: StandingNode | None = None
    node = name or default_node
    try:
        with raising_signals():
            cert, key, ca = tls
            creds: keys.Credentials | None = None
            if insecure:
                if name is None:
                    raise typer.BadParameter(f"{flag} with --insecure needs --name (the node id)")
            elif cert and key and ca:
                creds = keys.Credentials.load(cert, key, ca)
                node = creds.name
            else:
                raise typer.BadParameter("--cert, --key and --ca are required (or --insecure)")
            loop = build(node, creds)
            loop.run()
    except MurmuraError as exc:
        raise fail(exc, node) from None
    except Interrupted as exc:
        if loop is not None:
            loop.close()
        text = f"stopped by {exc.signame}; the same command waits for jobs again"
        say(log, "interrupted", text, node=node, signal=exc.signame)
        leave(0)
