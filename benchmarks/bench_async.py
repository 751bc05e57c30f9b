"""Stragglers and asynchronous aggregation on W1 in simulated time (``murmura.simtime``).

W1 (digits, 100 clients, Dirichlet 0.5, 5 local epochs, batch 16, lr 0.05) on a simulated
clock: per-sample times log-normal (median ``PER_SAMPLE`` s, sigma 1), each client reachable
30 % of a day at a random phase (diurnal), 1 MB/s down and 250 kB/s up. Ten clients' updates
per aggregation everywhere. Prints, for synchronous FedAvg (waits for its 10), deadline +
over-selection (13 drawn, the first 10 within ``DEADLINE`` s kept), FedAsync (10 in flight,
one update per aggregation) and FedBuff (20 in flight, a buffer of 10): the simulated time
to 0.90 test accuracy and the final accuracy, the ratio FedBuff / FedAvg (target <= 0.5), and
writes ``bench_async.png`` (accuracy against simulated hours).

    PYTHONPATH=src python benchmarks/bench_async.py [--out DIR] [--period-hours 24]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from murmura.config import config_from_dict
from murmura.sim.builder import build_experiment
from murmura.types import RoundMetrics

TARGET = 0.90
PER_SAMPLE, DEADLINE, UPDATES = 0.5, 120.0, 600
CLOCK = {
    "enabled": True,
    "sigma": 1.0,
    "per_sample_s": PER_SAMPLE,
    "availability": "diurnal",
    "on_fraction": 0.3,
    "period_s": 86400.0,
    "down_bps": 1e6,
    "up_bps": 2.5e5,
}
RUNS: dict[str, tuple[dict[str, Any], int]] = {
    "FedAvg (sync)": ({}, UPDATES // 10),
    "deadline + over-selection": ({"deadline_s": DEADLINE, "over_selection": 1.3}, UPDATES // 10),
    "FedAsync": ({"mode": "async", "algorithm": "fedasync", "concurrency": 10}, UPDATES),
    "FedBuff": ({"mode": "async", "buffer_size": 10, "concurrency": 20}, UPDATES // 10),
}


def w1(clock: dict[str, Any], rounds: int) -> dict[str, Any]:
    min_clients = 1 if clock.get("algorithm") == "fedasync" else 2
    return {
        "run": {"name": "bench-async", "seed": 0, "rounds": rounds},
        "task": {"name": "digits"},
        "partition": {"kind": "dirichlet", "num_clients": 100, "alpha": 0.5},
        "client": {"epochs": 5, "batch_size": 16, "lr": 0.05},
        "strategy": {"name": "fedavg", "fraction": 0.1, "min_clients": min_clients},
        "clock": {**CLOCK, **clock},
    }


def time_to(rounds: list[RoundMetrics], target: float) -> float | None:
    """Simulated seconds at the first evaluation at or above ``target``."""
    for m in rounds:
        if m.test_accuracy is not None and m.test_accuracy >= target:
            return float(m.extra["sim_time"])  # type: ignore[arg-type]
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--period-hours", type=float, default=24.0, help="diurnal period")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    CLOCK["period_s"] = args.period_hours * 3600
    curves: dict[str, list[RoundMetrics]] = {}
    print(
        f"{'run':<28}{'aggregations':>13}{'h to 0.90':>11}{'final acc':>11}{'failures':>10}"
        f"{'wall s':>8}"
    )
    for name, (clock, rounds) in RUNS.items():
        cfg = config_from_dict(w1(clock, rounds), name)
        t0 = time.perf_counter()
        history = build_experiment(cfg).simulation.run(rounds)
        curves[name] = history.rounds
        reach = time_to(history.rounds, TARGET)
        last = history.rounds[-1]
        failures = sum(len(m.failures) for m in history.rounds)
        shown = f"{reach / 3600:.2f}" if reach is not None else "never"
        print(
            f"{name:<28}{len(history.rounds):>13}{shown:>11}{last.test_accuracy:>11.4f}"
            f"{failures:>10}{time.perf_counter() - t0:>8.1f}",
            flush=True,
        )
    sync, buff = time_to(curves["FedAvg (sync)"], TARGET), time_to(curves["FedBuff"], TARGET)
    if sync is not None and buff is not None:
        print(f"FedBuff / FedAvg simulated time to {TARGET}: {buff / sync:.3f} (target <= 0.5)")
    _plot(curves, out / "bench_async.png")


def _plot(curves: dict[str, list[RoundMetrics]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rounds in curves.items():
        pts = [
            (float(m.extra["sim_time"]) / 3600, m.test_accuracy)  # type: ignore[arg-type]
            for m in rounds
            if m.test_accuracy is not None
        ]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
    ax.axhline(TARGET, color="grey", linestyle=":")
    ax.set_xlabel("simulated time (h)")
    ax.set_ylabel("test accuracy")
    ax.set_title("W1, log-normal speeds (sigma 1), 30 % of clients reachable")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
