"""Plots of a run's metrics, written as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from murmura.types import RoundMetrics


def plot_accuracy(rounds: Sequence[RoundMetrics], path: Path) -> None:
    """Test (and federated) accuracy and train/test loss against rounds, side by side.

    A run on the simulated clock (``[clock]``: every round has ``sim_time``) is plotted
    against simulated seconds instead.
    """
    # matplotlib's Figure draws with Agg by itself: no pyplot, no global backend, and the
    # import (~0.3 s without pyplot) is paid when a plot is written, not at start-up
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    acc_ax, loss_ax = fig.subplots(1, 2)
    timed = bool(rounds) and all("sim_time" in m.extra for m in rounds)
    xlabel = "simulated time (s)" if timed else "round"

    def x(ms: Sequence[RoundMetrics]) -> list[float]:
        return [float(m.extra["sim_time"]) if timed else m.round for m in ms]  # type: ignore[arg-type]

    evald = [m for m in rounds if m.test_accuracy is not None]
    fed = [m for m in rounds if m.federated_accuracy is not None]
    acc_ax.plot(x(evald), [m.test_accuracy for m in evald], marker="o", ms=3, label="test")
    if fed:
        xs = x(fed)
        acc_ax.plot(xs, [m.federated_accuracy for m in fed], marker="s", ms=3, label="federated")
        acc_ax.legend()
    acc_ax.set(xlabel=xlabel, ylabel="test accuracy", title="accuracy", ylim=(0, 1))
    trained = [m for m in rounds if m.train_loss is not None]
    loss_ax.plot(x(trained), [m.train_loss for m in trained], label="train")
    loss_ax.plot(x(evald), [m.test_loss for m in evald], label="test")
    if fed:
        loss_ax.plot(x(fed), [m.federated_loss for m in fed], label="federated")
    loss_ax.set(xlabel=xlabel, ylabel="loss", title="loss")
    loss_ax.legend()
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
