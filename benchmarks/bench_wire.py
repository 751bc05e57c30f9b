"""W5: W1 (examples/digits-fedavg.toml) with each uplink codec; not a test.

For each setting: final test accuracy, uplink bytes per client per round, the ratio to
float32, total bytes (up and down) over the run; a PNG of accuracy against cumulative uplink
bytes. Targets (issue 18): a setting with >= 10x fewer uplink bytes within 1 point of
uncompressed W1; >= 32x with top-k and error feedback within 3 points.

    python benchmarks/bench_wire.py [--rounds 20] [--png wire.png] [--only topk,sign]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
W1 = ROOT / "examples" / "digits-fedavg.toml"

SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("none", {}),
    ("float16", {"uplink": "float16"}),
    ("bfloat16", {"uplink": "bfloat16"}),
    ("quantize-8bit", {"uplink": "quantize", "args": {"bits": 8}}),
    ("quantize-4bit", {"uplink": "quantize", "args": {"bits": 4}}),
    ("qsgd-s4", {"uplink": "qsgd", "args": {"levels": 4}}),
    ("qsgd-s1", {"uplink": "qsgd", "args": {"levels": 1}}),
    ("topk-1/20+EF", {"uplink": "topk", "args": {"ratio": 0.05}}),
    ("topk-32x+EF", {"uplink": "topk", "args": {"ratio": 0.0199}}),
    ("topk-1/256+EF", {"uplink": "topk", "args": {"ratio": 1 / 256}}),
    # top-k with indices packed at 13 bits and quantised values, at 32x (<= 601 B framed);
    # 1 bit (levels -s and s) keeps the most values but its variance made W1 diverge
    ("topkq-8bit-32x+EF", {"uplink": "topkq", "args": {"ratio": 0.0445, "bits": 8}}),
    ("topkq-4bit-32x+EF", {"uplink": "topkq", "args": {"ratio": 0.0549, "bits": 4}}),
    ("topkq-2bit-32x+EF", {"uplink": "topkq", "args": {"ratio": 0.0622, "bits": 2}}),
    ("topkq-1bit-32x+EF", {"uplink": "topkq", "args": {"ratio": 0.0669, "bits": 1}}),
    ("randk-1/10+EF", {"uplink": "randk", "args": {"ratio": 0.1}}),
    ("sign+EF", {"uplink": "sign", "args": {"bucket": 1 << 20}}),
]


def run(compression: dict[str, Any], rounds: int) -> dict[str, Any]:
    """One W1 run with ``compression``; per-round accuracy and bytes."""
    from murmura.config import config_from_dict, load_config
    from murmura.sim.builder import build_experiment

    base = load_config(W1).model_dump()
    base["run"]["rounds"] = rounds
    base["compression"] = compression
    exp = build_experiment(config_from_dict(base))
    t0 = time.perf_counter()
    history = exp.simulation.run(rounds)
    lines = [m.to_json() for m in history.rounds]
    return {
        "seconds": time.perf_counter() - t0,
        "d": exp.model.layout.size,
        "accuracy": [float(m["test_accuracy"]) for m in lines],  # type: ignore[arg-type]
        "up_mean": [float(m["bytes_up_mean"]) for m in lines],  # type: ignore[arg-type]
        "up_total": [float(m["bytes_up_total"]) for m in lines],  # type: ignore[arg-type]
        "down_total": [float(m["bytes_down_total"]) for m in lines],  # type: ignore[arg-type]
    }


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Accuracy against cumulative uplink bytes, one line per setting (log x)."""
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    colours = matplotlib.colormaps["tab20"].colors
    for i, (name, r) in enumerate(results.items()):
        style = "-" if i % 2 == 0 else "--"  # tab20 pairs light and dark shades
        ax.plot(np.cumsum(r["up_total"]), r["accuracy"], style, marker="o", ms=2,
                color=colours[i % len(colours)], label=name)  # fmt: skip
    ax.set(xscale="log", xlabel="cumulative uplink bytes", ylabel="test accuracy")
    ax.set(title="W5: W1 with each uplink codec")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    """Run every setting, print the table and the targets, write the PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--png", type=Path, default=Path("bench_wire.png"))
    parser.add_argument("--only", default="", help="comma-separated setting names")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    results: dict[str, dict[str, Any]] = {}
    print(
        f"{'setting':18} {'acc':>6} {'up B/client/round':>18} {'ratio':>7} "
        f"{'total up':>11} {'total down':>11} {'sec':>6}",
        flush=True,
    )
    for name, compression in SETTINGS:
        if only and name not in only and name != "none":
            continue
        r = results[name] = run(compression, args.rounds)
        dense = 4 * r["d"]
        up = sum(r["up_mean"]) / len(r["up_mean"])
        print(
            f"{name:18} {r['accuracy'][-1]:6.4f} {up:18.0f} {dense / up:7.1f} "
            f"{sum(r['up_total']):11.0f} {sum(r['down_total']):11.0f} {r['seconds']:6.1f}",
            flush=True,
        )
    base = results["none"]["accuracy"][-1]
    dense = 4 * results["none"]["d"]

    def meets(ratio: float, points: float, prefix: str = "") -> list[str]:
        return [
            n
            for n, r in results.items()
            if n.startswith(prefix)
            and dense / (sum(r["up_mean"]) / len(r["up_mean"])) >= ratio
            and base - r["accuracy"][-1] <= points / 100
        ]

    print(f"target >= 10x within 1 point of {base:.4f}: {meets(10, 1) or 'none met'}")
    print(f"target >= 32x top-k+EF within 3 points: {meets(32, 3, 'topk') or 'none met'}")
    plot(results, args.png)
    print(f"plot: {args.png}")


if __name__ == "__main__":
    main()
