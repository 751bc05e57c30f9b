"""``murmura peer`` and ``murmura edge``: a networked P2P peer and an edge aggregator."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from murmura.node.topology_deploy import RedTeam

from murmura.errors import ConfigError, MurmuraError
from murmura.node.cli import LogFormat, LogFormatOption, fail, use_log_format

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
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Run peer K of CONFIG's graph: train, serve its model, mix with its neighbours.

    Ctrl-C (or SIGTERM) abandons the round in progress and exits 0; the same command resumes
    from the peer's checkpoint (its last completed round).
    """
    from murmura.node import progress
    from murmura.node.peer import Peer
    from murmura.node.shutdown import Interrupted, leave, raising_signals, until_signalled
    from murmura.node.topology_deploy import build_peer

    use_log_format(log_format)
    node: Peer | None = None
    try:
        with raising_signals():
            red_team = parse_attack(attack, attack_arg or [])
            if red_team is not None:
                console.print(f"[bold red]RED-TEAM PEER: attack {red_team.kind} is ON[/bold red]")
            node = build_peer(config, peer_id, set_, insecure, red_team)
            result = asyncio.run(until_signalled(node.run()))
    except MurmuraError as exc:
        raise fail(exc, f"peer-{peer_id}" if node is None else node.s.name) from None
    except Interrupted as exc:
        name, run = (f"peer-{peer_id}", None) if node is None else (node.s.name, node.s.run_id)
        done = node.done if node is not None else 0
        progress.interrupted(name, run, done, exc.signame)
        leave(0)
    name, run = node.s.name, node.s.run_id
    text = (
        f"{result.rounds_run} rounds in this process (resumed after round "
        f"{result.resumed_from}), last round {result.last_round}"
    )
    progress.finished(name, run, text, result.last_round, rounds=result.rounds_run)
    for budget in node.budgets:
        spent = budget.metrics()
        prefix = budget.name.removesuffix("epsilon")
        progress.privacy_spent(name, run, spent[budget.name], spent[f"{prefix}delta"])


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
    config: Annotated[
        Path | None, typer.Argument(help="Run config with an \\[edge] table (not --standing).")
    ] = None,
    set_: SetOption = None,
    insecure: InsecureOption = False,
    standing: Annotated[
        bool, typer.Option("--standing", help="Wait for a federation's tree jobs; stay up.")
    ] = False,
    server: Annotated[
        str | None, typer.Option("--server", help="--standing: the federation's HOST:PORT.")
    ] = None,
    cert: Annotated[Path | None, typer.Option("--cert", help="Edge certificate (PEM).")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="Edge private key (PEM).")] = None,
    ca: Annotated[Path | None, typer.Option("--ca", help="Project CA certificate (PEM).")] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Node id with --insecure (else from --cert).")
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="--standing: where it serves its sites.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="--standing: its port (0: per job).")
    ] = 0,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="--standing: a folder per job under jobs/.")
    ] = Path("runs/edges"),
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="--standing: a TOML whose \\[policy] table jobs must pass."),
    ] = None,
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Run an edge aggregator: a worker to its parent, a coordinator to its children.

    With --standing it connects to a federation (--server) and serves each tree job that
    names it in its edge tables, one after the other, and stays up.

    Ctrl-C (or SIGTERM) abandons the round in progress and exits 0; the same command rejoins
    the parent's run.
    """
    from murmura.node import progress
    from murmura.node.edge import Edge
    from murmura.node.shutdown import Interrupted, leave, raising_signals, until_signalled
    from murmura.node.topology_deploy import build_edge

    use_log_format(log_format)
    if standing:
        from murmura.federation.edge_cli import standing_edge

        if config is not None or set_:
            raise typer.BadParameter("CONFIG, --set: a standing edge takes its jobs' configs")
        if server is None:
            raise typer.BadParameter("--standing needs --server (the federation's HOST:PORT)")
        standing_edge(server, (cert, key, ca), name, insecure, host, port, state_dir, policy)
        return
    if config is None:
        raise typer.BadParameter("give CONFIG (a run config with an [edge] table) or --standing")
    given = {"--server": server, "--cert": cert, "--key": key, "--ca": ca, "--name": name,
             "--policy": policy, "--host": host != "127.0.0.1" or None, "--port": port or None,
             "--state-dir": state_dir != Path("runs/edges") or None}  # fmt: skip
    if standing_only := [flag for flag, value in given.items() if value is not None]:
        raise typer.BadParameter(
            f"{', '.join(standing_only)}: only with --standing (CONFIG's [edge] table says them)"
        )
    node: Edge | None = None
    try:
        with raising_signals():
            node = build_edge(config, set_, insecure)
            stats = asyncio.run(until_signalled(node.run()))
    except MurmuraError as exc:
        raise fail(exc, "edge" if node is None else node.settings.name) from None
    except Interrupted as exc:
        name = "edge" if node is None else node.settings.name
        worker = node.worker if node is not None else None
        run = worker.link.run_id if worker is not None else None
        progress.interrupted(name, run, worker.after_round if worker else 0, exc.signame)
        leave(0)
    name = node.settings.name
    text = f"{stats.rounds} rounds aggregated, stopped: {stats.reason}"
    run = node.worker.link.run_id if node.worker else None
    progress.finished(name, run, text, stats.last_round)
    if stats.reason.startswith("refused"):
        raise typer.Exit(3)


app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.command("peer")(peer)
app.command("edge")(edge)

if __name__ == "__main__":
    from murmura.console import setup

    setup("text", verbose=True)
    app()
