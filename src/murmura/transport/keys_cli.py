"""``murmura keys``: make a project CA and issue node certificates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from murmura.errors import MurmuraError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Project CA and node certificates."
)
console = Console()


@app.command("init")
def init(directory: Annotated[Path, typer.Argument(help="Key directory to create.")]) -> None:
    """Create a project CA (ca.pem, ca.key) in DIRECTORY."""
    from murmura.transport import keys  # cryptography: only for the command that uses it

    try:
        cert = keys.init_ca(directory)
    except MurmuraError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"CA certificate: {cert}\nKeep {directory / keys.CA_KEY} secret.")


@app.command("issue")
def issue(
    directory: Annotated[Path, typer.Argument(help="Key directory holding the CA.")],
    name: Annotated[str, typer.Argument(help="Node id (the certificate's common name).")],
    role: Annotated[
        str, typer.Option("--role", help="worker, edge, coordinator or admin (for jobs).")
    ] = "worker",
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="Extra DNS name or IP the node is reached at (repeatable)."),
    ] = None,
    days: Annotated[int, typer.Option("--days", help="Validity in days.")] = 365,
) -> None:
    """Issue a key and certificate for node NAME, signed by the CA in DIRECTORY."""
    from murmura.transport import keys

    try:
        files = keys.issue(directory, name, role, hosts=host or (), days=days)
    except MurmuraError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"{role} {name}: cert {files.cert}, key {files.key}, CA {files.ca}")


if __name__ == "__main__":
    app()
