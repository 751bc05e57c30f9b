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
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from murmura import __version__
from murmura.analytics import cli as stats_cli
from murmura.compress.plan_cli import plan_app
from murmura.dashboard import cli as dashboard_cli
from murmura.errors import MurmuraError
from murmura.federation.cli import job_app
from murmura.federation.site_cli import site_app
from murmura.node import cli as node_cli
from murmura.node import topology_cli
from murmura.ops.audit_cli import audit_app
from murmura.ops.bench_cli import bench_app
from murmura.ops.registry_cli import registry_app
from murmura.privacy.cli import privacy_app
from murmura.transport.keys_cli import app as keys_app

if TYPE_CHECKING:
    from murmura.ops.tracking import MlflowTracker
    from murmura.sim.session import Outcome, Session
    from murmura.types import RoundMetrics

app = typer.Typer(add_completion=False, no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")
app.add_typer(keys_app, name="keys", help="Project CA and node certificates.")
app.add_typer(bench_app, name="bench")
app.add_typer(plan_app, name="plan")
app.add_typer(audit_app, name="audit", help="The coordinator's tamper-evident audit ledger.")
app.add_typer(registry_app, name="registry", help="Final models in MLflow's Model Registry.")
app.add_typer(site_app, name="site", help="A site's own records: its privacy budget.")
app.add_typer(job_app, name="job", help="A standing federation's jobs (admin certificate).")
app.command("server")(node_cli.server)
app.command("client")(node_cli.client)
app.command("peer")(topology_cli.peer)
app.command("edge")(topology_cli.edge)
app.command("stats")(stats_cli.stats)
app.command("dashboard")(dashboard_cli.dashboard)
console = Console()
log = logging.getLogger("murmura.progress")
TRACKING_FILE = "mlflow_run_id"
"""A tracked run's MLflow run id, in its run folder, for ``murmura run --resume``."""
NODE = "simulation"
"""Who speaks in ``murmura run``'s log lines."""


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
    from murmura.console import setup

    setup("text", verbose, stream=console)  # a command's --log-format may change the format


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
    log_format: node_cli.LogFormatOption = node_cli.LogFormat.text,
) -> None:
    """Run a simulation from CONFIG and write runs/<run-id>/; Ctrl-C stops it resumably."""
    from murmura.console import fmt, say
    from murmura.sim import session as sessions

    node_cli.use_log_format(log_format)
    json_lines = log_format == node_cli.LogFormat.json
    try:
        if resume is not None:
            if config is not None or set_ or out is not None:
                raise MurmuraError(
                    "--resume RUN_DIR reads the run's own config.toml: give no CONFIG, --set "
                    "or --out"
                )
            session = sessions.resume(resume)
            _say(
                json_lines, "resumed",
                f"resuming run {session.run_dir.run_id} after round {session.start_round - 1}",
                session,
            )  # fmt: skip
        elif config is None:
            raise MurmuraError("give a CONFIG file, or --resume RUN_DIR")
        else:
            from murmura.config import load_config

            session = sessions.start(load_config(config, set_ or []), out)
            # the label picture, and [stats] when enabled: before any round
            exp, folder = session.exp, session.run_dir.path
            stats_cli.write_run_analytics(session.cfg, exp.data, folder, exp.statistics)
        tracker = _tracker(session)  # [tracking] mlflow; a resumed run continues its MLflow run
    except KeyboardInterrupt:
        console.print("interrupted before the first round; nothing was run")
        return
    except (MurmuraError, ValueError) as exc:
        if json_lines:
            raise node_cli.fail(MurmuraError(str(exc)), NODE) from None
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        outcome = _run_session(session, json_lines, tracker)
    except BaseException:
        if tracker is not None:
            tracker.stop("FAILED")
        raise
    last, summary = outcome.last, outcome.summary
    path = str(session.run_dir.path)
    if outcome.status == "interrupted":
        if tracker is not None:
            tracker.stop()  # KILLED until resumed
        text = f"interrupted at round {outcome.rounds}; run `murmura run --resume {path}` to resume"
        _say(json_lines, "interrupted", text, session, outcome.rounds)
        return
    try:
        from murmura.ops.tracked_run import end_tracking

        registered = end_tracking(tracker, session.cfg.model_dump(mode="json"), Path(path))
    except MurmuraError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    if tracker is not None:
        _say(json_lines, "tracked", f"tracked in MLflow run {tracker.mlflow_run_id} at "
             f"{tracker.uri}", session, outcome.rounds)  # fmt: skip
    if registered is not None:
        _say(json_lines, "registered", f"registered as {registered}", session, outcome.rounds)
    if json_lines:
        acc = fmt(last.test_accuracy if last else None)
        text = f"final test accuracy {acc}; run written to {path}"
        fields = {k: v for k, v in summary.items() if isinstance(v, int | float | str)}
        say(log, "finished", text, node=NODE, run=session.run_dir.run_id,
            round_=outcome.rounds, fields=fields, path=path)  # fmt: skip
        return
    console.print(f"final test accuracy: [bold]{fmt(last.test_accuracy if last else None)}[/]")
    if last is not None and last.federated_clients is not None:
        fed, n = fmt(last.federated_accuracy), last.federated_clients
        console.print(f"final federated accuracy: [bold]{fed}[/] ({n} clients)")
    if isinstance(eps := summary.get("epsilon"), float):
        console.print(f"privacy spent: epsilon {eps:.4g} at delta {summary.get('delta')}")
    console.print(f"run written to: {escape(path)}")


def _say(json_lines: bool, event: str, text: str, session: Session, round_: int = 0) -> None:
    """One lifecycle line of ``murmura run``: a JSON event, or plain console text."""
    from murmura.console import say

    if json_lines:
        say(log, event, text, node=NODE, run=session.run_dir.run_id, round_=round_)
    else:
        console.print(escape(text), soft_wrap=True)


def _tracker(session: Session) -> MlflowTracker | None:
    """The run's MLflow tracker when ``[tracking] mlflow`` is on; its id kept in the run folder.

    A resumed run reads that id back and continues the same MLflow run (no step twice).
    """
    if not session.cfg.tracking.mlflow:
        return None
    from murmura.ops.tracked_run import start_tracking

    saved = session.run_dir.path / TRACKING_FILE
    earlier = saved.read_text().strip() if saved.is_file() else None
    config = session.cfg.model_dump(mode="json")
    tracker = start_tracking(config, session.run_dir.path, session.run_dir.run_id, earlier)
    if tracker is not None:
        saved.write_text(tracker.mlflow_run_id + "\n")
    return tracker


def _run_session(
    session: Session, json_lines: bool = False, tracker: MlflowTracker | None = None
) -> Outcome:
    """Run with a progress bar; SIGINT/SIGTERM stop after the round, a second one at once."""
    from murmura.console import round_fields, round_status, say

    columns = (
        TextColumn("[bold]round"),
        MofNCompleteColumn(),
        BarColumn(bar_width=10),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    planned, run_id = session.cfg.run.rounds, session.run_dir.run_id
    with Progress(*columns, console=console, disable=json_lines) as bar:
        done = session.start_round - 1
        task_id = bar.add_task("rounds", total=planned, completed=done, status="starting")

        def on_round(m: RoundMetrics) -> None:
            if tracker is not None:
                tracker.log_round(m.to_json())
            bar.update(task_id, advance=1, status=round_status(m))
            if json_lines:  # the bar is off: one line per round instead
                text = f"round {m.round}/{planned}: {round_status(m)}"
                fields = round_fields(m)
                say(log, "round", text, node=NODE, run=run_id, round_=m.round, fields=fields)

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
