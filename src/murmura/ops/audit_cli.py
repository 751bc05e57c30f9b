"""``murmura audit ...``: verify and show a coordinator's audit ledger (mounted as ``audit``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from murmura.errors import MurmuraError

audit_app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(soft_wrap=True)  # one record, one line: easy to grep

KEY_HELP = (
    "Ed25519 public key (PEM) to check the signatures with. Pass a copy you trust, kept away "
    "from the coordinator's machine: the default, STATE_DIR/audit.pub, lies beside the ledger "
    "and can be rewritten with it."
)

CA_HELP = (
    "The project CA certificate (PEM): also check that every update record carries its "
    "worker's signature, made with a worker certificate this CA issued to that node, over "
    "exactly the run, round, node, kind, example count and SHA-256 the record states."
)


@audit_app.callback()
def audit() -> None:
    """The coordinator's tamper-evident audit ledger (STATE_DIR/audit.sqlite)."""


@audit_app.command("verify")
def verify_cmd(
    state_dir: Annotated[Path, typer.Argument(help="The coordinator's state dir.")],
    key: Annotated[Path | None, typer.Option("--key", help=KEY_HELP)] = None,
    head: Annotated[
        list[str] | None,
        typer.Option(
            "--head",
            help="SEQ:HASH the ledger must still hold, e.g. printed by an earlier verify "
            "(repeatable).",
        ),
    ] = None,
    ca: Annotated[Path | None, typer.Option("--ca", help=CA_HELP)] = None,
) -> None:
    """Check every record's hash, chain link and signature, and every pinned head.

    With --ca, also every update record's signature by its worker.
    Exit 0 with "N records, head SEQ:HASH, ok"; exit 1 naming the first bad record and why;
    exit 2 when --key or --ca cannot be read.
    """
    from murmura.ops.audit import PUB_FILE, Head, load_public_key, verify_state_dir
    from murmura.ops.audit_authors import WorkerSignatures

    try:
        heads = [Head.parse(h) for h in head or ()]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--head") from None
    try:  # a wrong --key or --ca is a usage error (2), unlike a ledger that fails (1)
        check = WorkerSignatures.from_file(ca) if ca is not None else None
        if key is not None:
            load_public_key(key)
    except MurmuraError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    try:
        verdict = verify_state_dir(state_dir, key, heads, check)
    except MurmuraError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    if not verdict.ok:
        console.print(f"[red]record {verdict.bad_seq}:[/red] {escape(verdict.reason)}")
        raise typer.Exit(1)
    signed = f", {check.checked} worker signatures verified" if check is not None else ""
    console.print(
        f"{verdict.records} records, head {verdict.head or '-'}, ok{signed}", highlight=False
    )
    if key is None:
        console.print(
            f"[yellow]note:[/yellow] checked with {state_dir / PUB_FILE}, which lies beside "
            "the ledger; pass --key with a copy you trust"
        )


@audit_app.command("show")
def show_cmd(
    state_dir: Annotated[Path, typer.Argument(help="The coordinator's state dir.")],
    run: Annotated[str | None, typer.Option("--run", help="Only this run id.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Show the last N records.", min=1)] = 50,
) -> None:
    """Print the ledger's last records (unverified: run `murmura audit verify` for that)."""
    from collections import deque

    from murmura.ops.audit import LEDGER_FILE, read_records

    try:
        records = deque(read_records(state_dir / LEDGER_FILE, run), maxlen=limit)
    except MurmuraError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    for r in records:
        details = " ".join(f"{k}={v}" for k, v in r.details().items())
        line = f"{r.seq:>6} {r.time[:23]} {r.run_id} r{r.round} {r.node or '-'} {r.event} {details}"
        console.print(escape(line), highlight=False)
