"""The ``murmura`` command line: run simulations, list tasks, and more."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from murmura import __version__
from murmura.errors import MurmuraError
from murmura.node import cli as node_cli
from murmura.node import topology_cli
from murmura.ops.audit_cli import audit_app
from murmura.ops.bench_cli import bench_app
from murmura.privacy.cli import privacy_app
from murmura.transport.keys_cli import app as keys_app

if TYPE_CHECKING:
    from murmura.types import RoundMetrics, Vector

app = typer.Typer(add_completion=False, no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")
app.add_typer(keys_app, name="keys", help="Project CA and node certificates.")
app.add_typer(bench_app, name="bench")
app.add_typer(audit_app, name="audit", help="The coordinator's tamper-evident audit ledger.")
app.command("server")(node_cli.server)
app.command("client")(node_cli.client)
app.command("peer")(topology_cli.peer)
app.command("edge")(topology_cli.edge)
console = Console()


def _version(value: bool) -> None:
    if value:
        console.print(f"murmura {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
) -> None:
    """murmura: decentralized learning, server-client, hierarchical and peer-to-peer."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="TOML config file.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: --set run.rounds=5.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Runs folder (default \\[run] out_dir).")
    ] = None,
) -> None:
    """Run a simulation from CONFIG and write runs/<run-id>/."""
    from murmura.config import load_config
    from murmura.ops.run_dir import RunDirectory
    from murmura.privacy.budget import privacy_summary
    from murmura.sim.builder import build_experiment
    from murmura.strategy.evaluation import federated_summary

    try:
        cfg = load_config(config, set_ or [])
        started = time.perf_counter()
        exp = build_experiment(cfg)
    except MurmuraError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    run_dir = RunDirectory(out or cfg.run.out_dir, cfg.run.name)
    run_dir.write_config(cfg.model_dump())
    columns = (
        TextColumn("[bold]round"),
        MofNCompleteColumn(),
        BarColumn(bar_width=10),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task_id = bar.add_task("rounds", total=cfg.run.rounds, status="starting")

        def on_round(m: RoundMetrics, _w: Vector) -> None:
            run_dir.log_round(m)
            failed = f" failures {len(m.failures)}" if m.failures else ""
            status = (
                f"participants {m.participants}{failed} train loss "
                f"{_fmt(m.train_loss, '.4f')} test acc {_fmt(m.test_accuracy, '.4f')}"
            )
            asr = m.extra.get("attack_success_rate")  # a backdoor's, next to the accuracy
            if isinstance(asr, float):
                status += f" attack success {asr:.4f}"
            bar.update(task_id, advance=1, status=status)

        history = exp.simulation.run(cfg.run.rounds, on_round=on_round)
    last = history.rounds[-1]
    summary = {
        "rounds": len(history.rounds),
        "final_test_accuracy": last.test_accuracy,
        "final_test_loss": last.test_loss,
        "wall_seconds": round(time.perf_counter() - started, 3),
        "failures": sum(len(m.failures) for m in history.rounds),
        **privacy_summary(history.rounds, cfg.run.rounds),
        **federated_summary(last.to_json()),
    }
    run_dir.finish(history.weights, exp.model.layout, summary)
    console.print(f"final test accuracy: [bold]{_fmt(last.test_accuracy, '.4f')}[/]")
    if last.federated_clients is not None:
        fed, n = _fmt(last.federated_accuracy, ".4f"), last.federated_clients
        console.print(f"final federated accuracy: [bold]{fed}[/] ({n} clients)")
    console.print(f"run written to: {escape(str(run_dir.path))}")


@app.command()
def tasks() -> None:
    """List the built-in tasks."""
    from murmura.tasks import TASKS

    for name in TASKS.names():  # from the registry: no task module (torch) is imported
        console.print(f"[bold]{name}[/]  {escape(TASKS.summary(name))}")


@app.command("config")
def config_keys() -> None:
    """Print the config reference: every table and key with its default."""
    from murmura.config_doc import config_reference

    print(config_reference())  # plain Markdown, for piping into a file
