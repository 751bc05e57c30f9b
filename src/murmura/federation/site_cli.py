"""``murmura site budget SITE.toml``: the privacy this site has spent, job by job and in total."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from murmura.errors import MurmuraError

if TYPE_CHECKING:
    from murmura.federation.budget import Charge

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
    name = site.site.name or str(site_file)  # the running site takes its certificate name
    if not ledger.exists():
        console.print(f"site {name}: no job charged yet (no ledger at {ledger})", soft_wrap=True)
        return
    book = open_budget(policy, site_file)
    try:
        jobs = book.jobs()
        table = Table(title=f"site {name}: privacy spent ({ledger})")
        for col in ("job", "charged (UTC)", "mechanism", "epsilon"):
            table.add_column(col, justify="right" if col == "epsilon" else "left")
        for job_id, parts in jobs.items():
            when = datetime.datetime.fromtimestamp(parts[0].charged, datetime.UTC)
            eps = book.epsilon(parts)
            table.add_row(job_id, f"{when:%Y-%m-%d %H:%M:%S}", mechanism(parts), f"{eps:.4f}")
        console.print(table)
        total, delta = book.spent()
    finally:
        book.close()
    limit = policy.lifetime_epsilon
    left = f"; lifetime_epsilon {limit:g}, {max(limit - total, 0.0):.4f} left" if limit else ""
    console.print(
        f"total: epsilon {total:.4f} at delta {delta:g} over {len(jobs)} DP jobs "
        f"({policy.accountant} accountant, composed){left}",
        soft_wrap=True,
    )


def mechanism(parts: list[Charge]) -> str:
    """A job's charged parts in a line: each kind's ``(z, q)`` with its steps (and rounds)."""
    from murmura.federation.budget import JOB, STATS

    steps: dict[tuple[str, float, float], list[int]] = {}
    for c in parts:
        kind = {JOB: "client-level", STATS: "stats"}.get(c.part, "DP-SGD")
        for z, q, n in c.history:
            steps.setdefault((kind, z, q), []).append(n)
    out = []
    for (kind, z, q), ns in steps.items():
        rounds = f" in {len(ns)} rounds" if kind == "DP-SGD" else ""
        unit = "rounds" if kind == "client-level" else "steps"
        out.append(f"{kind} z {z:.4g}, q {q:g}: {sum(ns)} {unit}{rounds}")
    return "; ".join(out)
