"""Clean accuracy of robust rules with and without pre-aggregation on W1 (no attack).

W1 is examples/digits-fedavg.toml: 100 clients on Dirichlet(0.5) digits, 20 rounds. Each
rule gets the parameters ``murmura bench robustness`` gives it for 20% attackers (Krum
``f = 20``, trimmed mean ``beta = 0.2``); each pre-aggregation its defaults: NNM and ARC assume
the same 20% (``fraction = 0.2``), bucketing uses buckets of ``s = 2`` (the paper's choice).
Nothing is tuned to an attack. Prints a Markdown table of final test accuracy and seconds.

    PYTHONPATH=src python benchmarks/bench_preaggregation.py [--rounds 20] [--jobs 1]
        [--rules weighted_mean krum ...] [--pres none nnm ...]
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
W1 = ROOT / "examples" / "digits-fedavg.toml"
RULES = ("weighted_mean", "coordinate_median", "trimmed_mean", "krum")
PRES = ("none", "nnm", "bucketing", "arc")
FRACTION = 0.2


def run(rule: str, pre: str, rounds: int) -> tuple[str, str, float | None, float]:
    """One W1 run of ``pre`` + ``rule``: (rule, pre, final test accuracy, seconds).

    A combination the config refuses (e.g. Bulyan's ``n >= 4f + 3`` over 50 buckets) has
    accuracy None.
    """
    import torch

    from murmura.config import config_from_dict
    from murmura.errors import ConfigError
    from murmura.ops.robustness import rule_args
    from murmura.sim.builder import build_experiment

    torch.set_num_threads(1)
    data: dict[str, Any] = tomllib.loads(W1.read_text())
    data["run"]["rounds"] = rounds
    cohort = data["partition"]["num_clients"]
    data["strategy"].update(
        aggregator=rule,
        aggregator_args=rule_args(rule, FRACTION, cohort),
        pre_aggregation=pre,
    )
    t0 = time.perf_counter()
    try:
        cfg = config_from_dict(data, f"W1 {pre} + {rule}")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return rule, pre, None, 0.0
    history = build_experiment(cfg).simulation.run(cfg.run.rounds)
    return rule, pre, float(history.rounds[-1].test_accuracy or 0.0), time.perf_counter() - t0


def cell(accuracy: float | None, seconds: float) -> str:
    """A table cell: accuracy and seconds, or why there is none."""
    return "refused" if accuracy is None else f"{accuracy:.3f} ({seconds:.0f} s)"


def main() -> None:
    """Run the grid and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--rules", nargs="+", default=list(RULES))
    parser.add_argument("--pres", nargs="+", default=list(PRES))
    args = parser.parse_args()
    rules, pres = args.rules, args.pres
    cells = [(r, p) for r in rules for p in pres]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run, *zip(*cells, strict=True), [args.rounds] * len(cells)))
    acc = {(r, p): (a, s) for r, p, a, s in results}
    print("| rule | " + " | ".join(pres) + " |")
    print("|---|" + "---|" * len(pres))
    for r in rules:
        row = [cell(*acc[r, p]) for p in pres]
        print(f"| {r} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
