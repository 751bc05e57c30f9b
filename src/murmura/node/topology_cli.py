"""``murmura peer`` and ``murmura edge``: a networked P2P peer and an edge aggregator."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from murmura.node.topology_deploy import RedTeam

from murmura.errors import ConfigError, MurmuraError

console = Console()
log = logging.getLogger(__name__)

SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a key: --set peers.round_timeout=5.")
]
InsecureOption = Annotated[
    bool, typer.Option("--insecure", help="No TLS (loopback only; for local tests).")
]


def peer(
    config: Annotated[Path, typer.Argument(help="P2P run config with a \\[peers] table.")],
    peer_id: Annotated[int, typer.Option("--id", help="This peer's index in \\[peers].")],
    set_: SetOption = None,
    insecure: InsecureOption = False,
    attack: Annotated[
        str | None,
        typer.Option(
            "--attack",
            help="RED-TEAMING ONLY: this peer sends what attack NAME produces (gaussian, "
            "scaling, sign_flip) instead of its model.",
        ),
    ] = None,
    attack_arg: Annotated[
        list[str] | None,
        typer.Option("--attack-arg", help="An argument of --attack: --attack-arg std=100."),
    ] = None,
) -> None:
    """Run peer K of CONFIG's graph: train, serve its model, mix with its neighbours."""
    from murmura.node.topology_deploy import build_peer

    try:
        red_team = parse_attack(attack, attack_arg or [])
        if red_team is not None:
            console.print(f"[bold red]RED-TEAM PEER: attack {red_team.kind} is ON[/bold red]")
        node = build_peer(config, peer_id, set_, insecure, red_team)
        result = asyncio.run(node.run())
    except MurmuraError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(
        f"{node.s.name}: {result.rounds_run} rounds in this process (resumed after round "
        f"{result.resumed_from}), last round {result.last_round}"
    )


def parse_attack(kind: str | None, args: list[str]) -> RedTeam | None:
    """``--attack`` and its ``--attack-arg KEY=VALUE`` (TOML values), or None when not given."""
    from murmura.config import parse_override
    from murmura.node.topology_deploy import RedTeam

    if kind is None:
        if args:
            raise ConfigError("--attack-arg needs --attack NAME")
        return None
    params: dict[str, object] = {}
    for item in args:
        if "=" not in item:
            raise ConfigError(f"--attack-arg {item!r}: expected KEY=VALUE, e.g. std=100")
        path, value = parse_override(item)
        params[".".join(path)] = value
    return RedTeam(kind, params)


def edge(
    config: Annotated[Path, typer.Argument(help="Run config with an \\[edge] table.")],
    set_: SetOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Run an edge aggregator: a worker to its parent, a coordinator to its children."""
    from murmura.node.topology_deploy import build_edge

    try:
        node = build_edge(config, set_, insecure)
        stats = asyncio.run(node.run())
    except MurmuraError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(
        f"{node.settings.name}: {stats.rounds} rounds aggregated, stopped: {escape(stats.reason)}"
    )
    if stats.reason.startswith("refused"):
        raise typer.Exit(3)


app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.command("peer")(peer)
app.command("edge")(edge)

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    app()
