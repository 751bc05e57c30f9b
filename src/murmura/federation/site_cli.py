"""``murmura site budget SITE.toml``: the privacy this site has spent, job by job and in total."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from murmura.errors import MurmuraError

site_app = typer.Typer(no_args_is_help=True, help="A site's own records: its privacy budget.")
console = Console()


@site_app.callback()
def _site() -> None:
    """A site's own records."""


@site_app.command("budget")
def budget(
    site_file: Annotated[Path, typer.Argument(help="The site config (its \\[policy] table).")],
) -> None:
    """Print the epsilon each DP job spent on this site's data, and their composition."""
    try:
        _show(site_file)
    except MurmuraError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None


def _show(site_file: Path) -> None:
    from murmura.federation.site_guard import open_budget
    from murmura.node.site import load_site_config, site_policy

    site = load_site_config(site_file)
    policy = site_policy(site, site_file)
    ledger = policy.ledger_path(site_file)
    name = site.site.name or site_file.stem
    if not ledger.exists():
        console.print(f"site {name}: no job charged yet (no ledger at {ledger})", soft_wrap=True)
        return
    book = open_budget(policy, site_file)
    try:
        charges = book.entries()
        table = Table(title=f"site {name}: privacy spent ({ledger})")
        for col in ("job", "charged (UTC)", "mechanism", "epsilon"):
            table.add_column(col, justify="right" if col == "epsilon" else "left")
        for c in charges:
            when = datetime.datetime.fromtimestamp(c.charged, datetime.UTC)
            steps = "; ".join(f"z {z:.4g}, q {q:g}, {n} rounds" for z, q, n in c.history)
            eps = book.epsilon([c])
            table.add_row(c.job_id, f"{when:%Y-%m-%d %H:%M:%S}", steps, f"{eps:.4f}")
        console.print(table)
        total, delta = book.spent()
    finally:
        book.close()
    limit = policy.lifetime_epsilon
    left = f"; lifetime_epsilon {limit:g}, {max(limit - total, 0.0):.4f} left" if limit else ""
    console.print(
        f"total: epsilon {total:.4f} at delta {delta:g} over {len(charges)} DP jobs "
        f"({policy.accountant} accountant, composed){left}",
        soft_wrap=True,
    )
