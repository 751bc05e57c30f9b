"""The ``murmura`` command line: run simulations, list tasks, and more."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    from murmura.sim.session import Outcome, Session
    from murmura.types import RoundMetrics

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
    config: Annotated[Path | None, typer.Argument(help="TOML config file.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: --set run.rounds=5.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Runs folder (default \\[run] out_dir).")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Resume the interrupted run in this folder, with its config.toml.",
        ),
    ] = None,
) -> None:
    """Run a simulation from CONFIG and write runs/<run-id>/; Ctrl-C stops it resumably."""
    from murmura.sim import session as sessions

    try:
        if resume is not None:
            if config is not None or set_ or out is not None:
                raise MurmuraError(
                    "--resume RUN_DIR reads the run's own config.toml: give no CONFIG, --set "
                    "or --out"
                )
            session = sessions.resume(resume)
            console.print(
                f"resuming run {escape(session.run_dir.run_id)} after round "
                f"{session.start_round - 1}"
            )
        elif config is None:
            raise MurmuraError("give a CONFIG file, or --resume RUN_DIR")
        else:
            from murmura.config import load_config

            session = sessions.start(load_config(config, set_ or []), out)
    except KeyboardInterrupt:
        console.print("interrupted before the first round; nothing was run")
        return
    except MurmuraError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    outcome = _run_session(session)
    last = outcome.last
    path = escape(str(session.run_dir.path))
    if outcome.status == "interrupted":
        console.print(
            f"interrupted at round {outcome.rounds}; run `murmura run --resume {path}` to resume",
            soft_wrap=True,
        )
        return
    console.print(
        f"final test accuracy: [bold]{_fmt(last.test_accuracy if last else None, '.4f')}[/]"
    )
    if last is not None and last.federated_clients is not None:
        fed, n = _fmt(last.federated_accuracy, ".4f"), last.federated_clients
        console.print(f"final federated accuracy: [bold]{fed}[/] ({n} clients)")
    console.print(f"run written to: {path}")


def _run_session(session: Session) -> Outcome:
    """Run with a progress bar; SIGINT/SIGTERM stop after the round, a second one at once."""
    columns = (
        TextColumn("[bold]round"),
        MofNCompleteColumn(),
        BarColumn(bar_width=10),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        done = session.start_round - 1
        task_id = bar.add_task(
            "rounds", total=session.cfg.run.rounds, completed=done, status="starting"
        )

        def on_round(m: RoundMetrics) -> None:
            failed = f" failures {len(m.failures)}" if m.failures else ""
            status = (
                f"participants {m.participants}{failed} train loss "
                f"{_fmt(m.train_loss, '.4f')} test acc {_fmt(m.test_accuracy, '.4f')}"
            )
            bar.update(task_id, advance=1, status=status)

        def on_signal(signum: int, _frame: object) -> None:
            if session.finishing:
                return  # the outputs are being written
            if session.stop_requested:
                raise KeyboardInterrupt
            session.request_stop()
            bar.update(task_id, status="stopping after this round (again: stop now)")

        with _handling(on_signal):
            return session.run(on_round)


@contextmanager
def _handling(handler: Callable[[int, object], None]) -> Iterator[None]:
    """``handler`` for SIGINT and SIGTERM while the block runs (main thread only)."""
    kinds = (signal.SIGINT, signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    old = {k: signal.signal(k, handler) for k in kinds}
    try:
        yield
    finally:
        for k, h in old.items():
            signal.signal(k, h)


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
