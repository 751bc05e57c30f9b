"""W1 (examples/digits-fedavg.toml) under SecAgg+, with and without 8-bit levels; not a test.

Quantised secure aggregation (``compression.uplink = "quantize"`` with ``[secagg]``) masks
8-bit levels on a public grid in the ring 2^16 instead of fixed point in 2^32: each masked
word costs 2 bytes instead of 4. Prints per setting the final accuracy, the masked input's
bytes per client per round (``bytes_up_mean``), every SecAgg+ message of a client per round
(``secagg_bytes_per_client``) and the ratios.

    python benchmarks/bench_secagg_levels.py [--rounds 5] [--clip 1.0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from murmura.config import config_from_dict, load_config
from murmura.sim.builder import build_experiment

W1 = Path(__file__).parents[1] / "examples" / "digits-fedavg.toml"


def run(rounds: int, clip: float, levels: bool) -> dict[str, Any]:
    """One W1 run under SecAgg+; the last round's figures."""
    base = load_config(W1).model_dump()
    base["run"]["rounds"] = rounds
    base["secagg"] = {"enabled": True, "clip": clip}
    if levels:
        base["compression"] = {"uplink": "quantize", "args": {"bits": 8}}
    t0 = time.perf_counter()
    history = build_experiment(config_from_dict(base)).simulation.run(rounds)
    last = history.rounds[-1].to_json()
    return {
        "accuracy": last["test_accuracy"],
        "loss": last["test_loss"],
        "bytes_up": last["bytes_up_mean"],
        "secagg_bytes": last["secagg_bytes_per_client"],
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clip", type=float, default=1.0)
    args = parser.parse_args()
    plain = run(args.rounds, args.clip, levels=False)
    quant = run(args.rounds, args.clip, levels=True)
    print(f"W1 under SecAgg+, {args.rounds} rounds, secagg.clip = {args.clip}")
    print(f"{'setting':<22}{'accuracy':>10}{'loss':>8}{'masked B/client':>17}"
          f"{'all SecAgg B':>14}{'s':>8}")  # fmt: skip
    for name, r in (("secagg (mod 2^32)", plain), ("secagg + 8-bit levels", quant)):
        print(f"{name:<22}{r['accuracy']:>10.4f}{r['loss']:>8.4f}{r['bytes_up']:>17.0f}"
              f"{r['secagg_bytes']:>14.0f}{r['seconds']:>8.1f}")  # fmt: skip
    print(f"masked input ratio {plain['bytes_up'] / quant['bytes_up']:.2f}x, all SecAgg+ "
          f"messages {plain['secagg_bytes'] / quant['secagg_bytes']:.2f}x, accuracy "
          f"{100 * (quant['accuracy'] - plain['accuracy']):+.2f} points")  # fmt: skip


if __name__ == "__main__":
    main()
