"""``murmura stats JOB.toml``, and the statistics ``murmura run`` writes into its run folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from murmura.errors import MurmuraError

if TYPE_CHECKING:
    from murmura.analytics.result import FederatedStats
    from murmura.config import Config
    from murmura.data.federated import FederatedDataset

log = logging.getLogger(__name__)
console = Console()

MAX_PICTURE_SITES = 1000
"""Above this many clients ``murmura run`` draws no label picture (one row per site)."""


def run_statistics(cfg: Config, data: FederatedDataset) -> FederatedStats:
    """The statistics round of ``cfg``'s ``[stats]`` over the simulated clients of ``data``."""
    from murmura.analytics.federation import plan_from_config
    from murmura.analytics.simulate import classes_of, largest_client, simulate_statistics

    needs_rows = cfg.stats.secure_aggregation and cfg.stats.max_rows is None
    plan = plan_from_config(cfg, classes_of(data), largest_client(data) if needs_rows else None)
    return simulate_statistics(data, plan)


def write_run_analytics(
    cfg: Config, data: FederatedDataset, folder: Path, stats: FederatedStats | None = None
) -> None:
    """What ``murmura run`` adds to its folder: the label picture, and ``stats.json`` if enabled.

    ``stats``: the statistics already computed (``[stats] standardise`` fitted the task's
    scaling from them, on the raw rows; ``data`` is then standardised). Raises
    ``ConfigError`` for a ``[stats]`` the data does not fit (before any round).
    """
    from murmura.analytics.report import write_label_picture, write_stats
    from murmura.analytics.simulate import classes_of, site_label_counts

    if cfg.stats.enabled:
        write_stats(folder, stats if stats is not None else run_statistics(cfg, data))
    classes = classes_of(data)
    if classes and data.num_clients <= MAX_PICTURE_SITES:
        write_label_picture(folder, site_label_counts(data, classes))
    elif classes:
        log.info("%d clients: no label picture (at most %d)", data.num_clients, MAX_PICTURE_SITES)


def stats(
    config: Annotated[Path, typer.Argument(help="TOML job config (a simulation).")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: --set stats.bins=20.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Runs folder (default \\[run] out_dir).")
    ] = None,
) -> None:
    r"""Federated statistics of CONFIG's clients (\[stats]); print them, write stats.json."""
    from murmura.analytics.report import labels_table, stats_table, write_stats
    from murmura.compose.workload import federate
    from murmura.config import load_config
    from murmura.ops.run_dir import RunDirectory
    from murmura.tasks import load_task

    try:
        cfg = load_config(config, set_ or [])
        _, data = federate(cfg, load_task(cfg.task.name, **cfg.task.args))
        result = run_statistics(cfg, data)
    except (MurmuraError, ValueError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    run_dir = RunDirectory.create(out or cfg.run.out_dir, f"{cfg.run.name}-stats")
    run_dir.write_config(cfg.model_dump())
    path = write_stats(run_dir.path, result)
    console.print(stats_table(result))
    if result.labels.size:
        console.print(labels_table(result))
    console.print(f"statistics written to: {escape(str(path))}")
