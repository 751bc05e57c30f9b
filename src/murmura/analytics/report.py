"""Statistics into the run folder (``stats.json``, the label picture) and onto the terminal.

The non-IID picture of a federation is each site's share of every class: a heat map of sites
(rows) by classes (columns), with the raw counts in ``label_histograms.json`` beside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from rich.table import Table

from murmura.analytics.result import FederatedStats
from murmura.analytics.summary import F64

STATS_FILE = "stats.json"
LABELS_FILE = "label_histograms.json"
HEATMAP_FILE = "label_share.png"


def _write_json(path: Path, body: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def write_stats(folder: Path, stats: FederatedStats) -> Path:
    """Write ``stats.json`` (and the label picture when there are per-site labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STATS_FILE
    _write_json(path, stats.to_json())
    if stats.site_labels is not None and stats.labels.size:
        write_label_picture(folder, stats.site_labels)
    return path


def class_shares(site_labels: Mapping[str, F64]) -> tuple[list[str], F64]:
    """(site names in order, (sites, classes) share of each class among a site's rows)."""
    names = list(site_labels)
    counts = np.stack([np.asarray(site_labels[n], dtype=np.float64) for n in names])
    totals = counts.sum(axis=1, keepdims=True)
    return names, np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def write_label_picture(folder: Path, site_labels: Mapping[str, F64]) -> None:
    """``label_histograms.json`` (counts per site) and ``label_share.png`` (the heat map)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / LABELS_FILE, {k: v.tolist() for k, v in site_labels.items()})
    names, share = class_shares(site_labels)
    fig, ax = plt.subplots(figsize=(1 + 0.4 * share.shape[1], 1 + 0.25 * len(names)))
    image = ax.imshow(share, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xlabel("class")
    ax.set_ylabel("site")
    ax.set_xticks(range(share.shape[1]))
    ax.set_yticks(range(len(names)), names if len(names) <= 40 else None)
    ax.set_title("class share per site")
    fig.colorbar(image, ax=ax, label="share of the site's rows")
    fig.tight_layout()
    fig.savefig(folder / HEATMAP_FILE, dpi=100)
    plt.close(fig)


def stats_table(stats: FederatedStats, names: list[str] | None = None) -> Table:
    """A rich table: one row per feature (count, mean, std, variance, min, max)."""
    title = f"federated statistics: {stats.count:g} rows from {stats.sites} sites"
    if stats.epsilon is not None:
        title += f", (epsilon {stats.epsilon:.3g}, delta {stats.delta:g})-DP"
    if stats.secure:
        title += ", secure aggregation"
    table = Table(title=title)
    for col in ("feature", "mean", "std", "variance", "min", "max"):
        table.add_column(col, justify="left" if col == "feature" else "right")
    for j in range(stats.features):
        lo = hi = "-"
        if stats.minimum is not None and stats.maximum is not None:
            lo, hi = f"{stats.minimum[j]:.6g}", f"{stats.maximum[j]:.6g}"
        var = stats.variance[j]
        row = (f"{stats.mean[j]:.6g}", f"{np.sqrt(max(var, 0.0)):.6g}", f"{var:.6g}", lo, hi)
        table.add_row(names[j] if names else str(j), *row)
    return table


def labels_table(stats: FederatedStats) -> Table:
    """A rich table: rows per class, overall and (when known) per site."""
    sites = dict(stats.site_labels or {})
    table = Table(title="labels")
    table.add_column("class", justify="right")
    table.add_column("all", justify="right")
    for name in sites:
        table.add_column(name, justify="right")
    for k in range(stats.labels.size):
        table.add_row(str(k), f"{stats.labels[k]:g}", *(f"{v[k]:g}" for v in sites.values()))
    return table
