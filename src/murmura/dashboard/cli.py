"""``murmura dashboard``: serve the read-only web dashboard over run folders and a state dir."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)
EXTRA = "murmura[dashboard]"


def dashboard(
    runs: Annotated[
        Path | None,
        typer.Option("--runs", help="Runs folder to list (default: runs, or STATE_DIR/runs)."),
    ] = None,
    state: Annotated[
        Path | None, typer.Option("--state", help="A coordinator's state dir, to watch it live.")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0: any free one).")] = 8765,
    allow_remote: Annotated[
        bool,
        typer.Option("--allow-remote", help="Listen on a non-loopback host (no authentication)."),
    ] = False,
) -> None:
    """Serve a live web page of runs and a coordinator; it only reads, never writes."""
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        console.print(f"error: murmura dashboard needs {', '.join(missing)}: pip install '{EXTRA}'")
        raise typer.Exit(2)
    from murmura.transport.grpc_server import is_loopback  # grpc: not for `murmura --help`

    if not allow_remote and not is_loopback(host):
        console.print(
            f"error: --host {host} is not loopback and the dashboard has no authentication; "
            "use 127.0.0.1 (or pass --allow-remote behind your own proxy)"
        )
        raise typer.Exit(2)
    if state is not None and not state.is_dir():
        console.print(f"error: --state {state}: no such directory")
        raise typer.Exit(2)
    if runs is None:  # a coordinator writes its run folders under its state dir
        runs = state / "runs" if state is not None else Path("runs")
    import uvicorn

    from murmura.dashboard.app import create_app

    app = create_app(runs.resolve(), state.resolve() if state else None)
    console.print(f"dashboard on http://{host}:{port}/ (runs: {runs}, state: {state or '-'})")
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=1)
