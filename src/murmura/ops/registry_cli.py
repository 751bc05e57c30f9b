"""``murmura registry ...``: final models in MLflow's Model Registry (mounted as ``registry``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from murmura.errors import LineageError, MurmuraError

registry_app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(soft_wrap=True)

URI_HELP = (
    "MLflow tracking URI (a server, or sqlite:///PATH/mlflow.db). Default: $MLFLOW_TRACKING_URI, "
    "else the local store in the runs folder"
)


@registry_app.callback()
def registry() -> None:
    """Register a run's final model with its lineage, and verify a registered version."""


def _fail(exc: Exception, code: int) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(str(exc))}")
    return typer.Exit(code)


@registry_app.command("register")
def register_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder (runs/<run-id>).")],
    name: Annotated[str, typer.Option("--name", help="Registered model name.")],
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help=URI_HELP.replace("runs folder", "run's parent")),
    ] = None,
) -> None:
    """Register RUN_DIR's final model as a new version of NAME, with its lineage and model card."""
    from murmura.ops.model_registry import register
    from murmura.ops.tracking import require_mlflow

    try:
        require_mlflow()
        got = register(run_dir, name, tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    except MurmuraError as exc:
        raise _fail(exc, 2) from None
    console.print(
        f"registered {escape(got.name)} version {got.version}: weights sha256 "
        f"{got.lineage.weights_sha256}, run {escape(got.lineage.run_id)}",
        highlight=False,
    )


@registry_app.command("verify")
def verify_cmd(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Its version number.")],
    state: Annotated[
        Path | None,
        typer.Option("--state", help="The coordinator's state dir: check its audit ledger too."),
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help=URI_HELP)] = None,
    runs: Annotated[
        Path, typer.Option("--runs", help="Runs folder holding the local store.")
    ] = Path("runs"),
) -> None:
    """Re-hash the registered weights and check them against their lineage.

    Exit 0 with "ok"; exit 1 naming what differs; exit 2 when the version cannot be read.
    """
    from murmura.ops.model_registry import verify
    from murmura.ops.tracking import STORE_FILE, require_mlflow, store_uri

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or store_uri(runs)
    try:
        if uri == store_uri(runs) and not (runs / STORE_FILE).is_file():
            raise MurmuraError(
                f"no MLflow store at {runs / STORE_FILE}: pass --runs or --tracking-uri"
            )
        require_mlflow()
        got = verify(name, version, uri, state)
    except LineageError as exc:
        raise _fail(exc, 1) from None
    except MurmuraError as exc:
        raise _fail(exc, 2) from None
    ledger = f", audit ledger head {got.lineage.audit_head} holds it" if state else ""
    console.print(
        f"{escape(name)} version {got.version}: weights sha256 {got.lineage.weights_sha256} "
        f"match the lineage of run {escape(got.lineage.run_id)}{ledger}; ok",
        highlight=False,
    )
