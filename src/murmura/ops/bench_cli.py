"""``murmura bench ...``: benchmark commands (mounted by the main CLI as ``bench``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from murmura.errors import MurmuraError

bench_app = typer.Typer(add_completion=False, no_args_is_help=True)
console = Console()


@bench_app.callback()
def bench() -> None:
    """Benchmarks: figures printed and written to files."""


def _names(value: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list, or the default list."""
    return default if not value else tuple(v.strip() for v in value.split(",") if v.strip())


@bench_app.command("robustness")
def robustness_cmd(
    config: Annotated[Path, typer.Argument(help="TOML config of the task (e.g. W1).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("runs/robustness"),
    attacks: Annotated[
        str | None, typer.Option("--attacks", help="Comma-separated attacks (default: all).")
    ] = None,
    rules: Annotated[
        str | None, typer.Option("--rules", help="Comma-separated plain aggregation rules.")
    ] = None,
    defences: Annotated[
        str | None,
        typer.Option(
            "--defences",
            help="Comma-separated named defences, e.g. krum,nnm+krum,flame (default: every "
            "one this build has; --rules and --defence add to an explicit list).",
        ),
    ] = None,
    defence: Annotated[
        list[str] | None,
        typer.Option(
            "--defence",
            help="A defence as config overrides: "
            '\'NAME:strategy.pre_aggregation="nnm",strategy.aggregator="krum"\'.',
        ),
    ] = None,
    fraction: Annotated[float, typer.Option("--fraction", help="Byzantine fraction.")] = 0.2,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Cells run in parallel.")] = 1,
    rounds: Annotated[
        int | None, typer.Option("--rounds", help="Override the config's rounds (a reduced grid).")
    ] = None,
) -> None:
    """Run the attacks x defences grid on CONFIG; write robustness.md/.png/.json under --out."""
    from murmura.ops.robustness import ATTACKS_DEFAULT, Cell, flag_text, robustness
    from murmura.ops.robustness_defences import chosen_defences

    def report(cell: Cell) -> None:
        acc = "error" if cell.accuracy is None else f"{cell.accuracy:.4f}"
        flags = "" if cell.flags is None else f"  flags P/R {flag_text(cell.flags)}"
        asr = "" if cell.asr is None else f"  ASR {cell.asr:.3f}"
        line = f"{cell.attack:>19} x {cell.rule:<24} {acc}{asr}{flags}  ({cell.seconds:.0f} s)"
        console.print(line, highlight=False)

    try:
        robustness(
            config,
            out,
            _names(attacks, ATTACKS_DEFAULT),
            chosen_defences(rules, defences, defence or []),
            fraction,
            jobs,
            on_cell=report,
            rounds=rounds,
        )
    except MurmuraError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(escape(f"written: {out / 'robustness.md'}, {out / 'robustness.png'}"))
