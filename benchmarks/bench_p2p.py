"""Peer-to-peer vs server-client on W1 (digits), and Byzantine-robust gossip.

Mapping of W1 to peers: W1's partition is kept exactly (100 clients, Dirichlet 0.5, seed 0)
and the 16 peers each hold the union of a contiguous block of 6 or 7 of those clients
(blocks of ``np.array_split(range(100), 16)``). Every run gets W1's budget of client-epochs:
FedAvg trains 100 clients x 5 epochs x 20 rounds = 100 passes over the 1,437 training
samples (143,700 sample-gradients); D-PSGD peers take ``STEPS`` minibatches of 16 per round,
so ``rounds = 143,700 / (16 peers * STEPS * 16)``; gossip learning trains 5 local epochs per
round for 20 rounds, exactly like FedAvg. Local SGD is W1's (batch 16, lr 0.05).

Byzantine runs: 3 of the 16 peers send the negated model (sign flip, scale 1) instead of
their own; the honest peers' mean accuracy is reported, for two placements on the 4x4 torus:
A = peers 6, 7, 11 (the run seed's ``choose_byzantine`` draw; honest peer 10 has two
Byzantine neighbours of four) and B = peers 0, 9, 12 (honest peers 8 and 13 have two each).
The fixed clipping radius tau = 0.1 was picked from {0.02, 0.1, 0.5, 2} on placement B with
the attack on (0.5 and 2 collapse like plain gossip); treat it as tuned, not blind.

Usage: python benchmarks/bench_p2p.py [--out DIR] [--steps K] [--only NAME-PREFIX ...]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from murmura.config import config_from_dict  # noqa: E402
from murmura.sim.builder import build_experiment  # noqa: E402
from murmura.types import RoundMetrics  # noqa: E402

TRAIN_SIZE = 1437  # W1's 80 % split of 1,797 digits
W1_ROUNDS, W1_EPOCHS, BATCH, PEERS = 20, 5, 16, 16
BUDGET = W1_ROUNDS * W1_EPOCHS * TRAIN_SIZE  # sample-gradients in W1's FedAvg run


@dataclass
class Result:
    panel: int
    name: str
    rounds: list[RoundMetrics]
    passes_per_round: float
    seconds: float


Scenario = tuple[int, str, dict[str, Any], float]
PANELS = (
    "no attack",
    "3 sign-flip peers, placement A (6, 7, 11)",
    "3 sign-flip peers, placement B (0, 9, 12)",
)
PLACEMENTS = {1: [6, 7, 11], 2: [0, 9, 12]}
CLEAN, FEDAVG = "D-PSGD torus 4x4", "FedAvg (server-client, W1)"


def w1(**topology: Any) -> dict[str, Any]:
    return {
        "run": {"name": "bench-p2p", "seed": 0, "rounds": W1_ROUNDS},
        "task": {"name": "digits"},
        "partition": {"kind": "dirichlet", "num_clients": 100, "alpha": 0.5},
        "client": {"epochs": W1_EPOCHS, "batch_size": BATCH, "lr": 0.05},
        "strategy": {"name": "fedavg", "fraction": 1.0, "min_clients": 2},
        "topology": topology,
    }


def run(panel: int, name: str, data: dict[str, Any], passes_per_round: float) -> Result:
    cfg = config_from_dict(data, name)
    t0 = time.perf_counter()
    history = build_experiment(cfg).simulation.run(cfg.run.rounds)
    res = Result(panel, name, history.rounds, passes_per_round, time.perf_counter() - t0)
    last = history.rounds[-1]
    print(
        f"  {name:<40} rounds {cfg.run.rounds:>4}  acc {last.test_accuracy:.4f}  "
        f"[{last.extra.get('accuracy_min', last.test_accuracy):.3f}, "
        f"{last.extra.get('accuracy_max', last.test_accuracy):.3f}]  "
        f"consensus {last.extra.get('consensus_distance', 0.0):.3g}  {res.seconds:.1f}s",
        flush=True,
    )
    return res


def dpsgd(kind: str, steps: int, **more: Any) -> tuple[dict[str, Any], float]:
    per_round = PEERS * steps * BATCH
    rounds = round(BUDGET / per_round)
    data = w1(kind=kind, args={"n": PEERS}, algorithm="dpsgd", local_steps=steps, **more)
    data["run"]["rounds"] = rounds
    data["evaluation"] = {"every": max(1, rounds // 60)}
    return data, per_round / TRAIN_SIZE


ROBUST: dict[str, dict[str, Any]] = {
    "plain gossip": {},
    "clipped tau=0.1": {"robust": "clipped", "tau": 0.1},
    "clipped adaptive": {"robust": "clipped", "clip_weight": 0.5},
    "median": {"robust": "coordinate_median"},
}


def scenarios(steps: int) -> list[Scenario]:
    gossip = w1(kind="torus", args={"n": PEERS}, algorithm="gossip")
    out: list[Scenario] = [
        (0, FEDAVG, w1(), float(W1_EPOCHS)),
        (0, CLEAN, *dpsgd("torus", steps)),
        (0, "D-PSGD ring", *dpsgd("ring", steps)),
        (0, "gossip torus, 5 epochs/round", gossip, float(W1_EPOCHS)),
        (0, "D-PSGD torus, clipped tau=0.1", *dpsgd("torus", steps, **ROBUST["clipped tau=0.1"])),
    ]
    for panel, peers in PLACEMENTS.items():
        flip = {"scale": 1.0, "relative_to": "model"}  # a sign-flipped model, not update
        attack = {"byzantine_peers": peers, "attack": "sign_flip", "attack_args": flip}
        for label, robust in ROBUST.items():
            name = f"{'AB'[panel - 1]}: {label}"
            out.append((panel, name, *dpsgd("torus", steps, **attack, **robust)))
    return out


def _colour(name: str) -> str:
    keys = [FEDAVG, CLEAN, "D-PSGD ring", "gossip torus", "clipped tau", *ROBUST]
    hits = [i for i, k in enumerate(keys) if k in name]
    return f"C{hits[-1] if hits else 9}"


def _curves(res: Result, acc_ax: Any, cd_ax: Any) -> None:
    ev = [m for m in res.rounds if m.test_accuracy is not None]
    x = [m.round * res.passes_per_round for m in ev]
    colour, style = _colour(res.name), "--" if res.name.startswith("D-PSGD torus,") else "-"
    label = f"{res.name} ({len(res.rounds)} rounds)"
    acc_ax.plot(x, [m.test_accuracy for m in ev], style, color=colour, label=label)
    if ev and "accuracy_min" in ev[0].extra:
        lo = [float(m.extra["accuracy_min"]) for m in ev]  # type: ignore[arg-type]
        hi = [float(m.extra["accuracy_max"]) for m in ev]  # type: ignore[arg-type]
        acc_ax.fill_between(x, lo, hi, color=colour, alpha=0.12)
    cd = [
        (m.round * res.passes_per_round, float(m.extra["consensus_distance"]))  # type: ignore[arg-type]
        for m in res.rounds
        if "consensus_distance" in m.extra
    ]
    if cd:
        xs, ys = zip(*cd, strict=True)
        cd_ax.plot(xs, ys, style, color=colour, label=res.name)


def plot(results: list[Result], path: Path) -> None:
    """One row per panel; the clean torus run is drawn in every row as the reference."""
    panels = sorted({r.panel for r in results})
    fig, axes = plt.subplots(len(panels), 2, figsize=(13, 4.3 * len(panels)), squeeze=False)
    for row, panel in enumerate(panels):
        acc_ax, cd_ax = axes[row]
        for res in results:
            if res.panel == panel or (panel > 0 and res.name == CLEAN):
                _curves(res, acc_ax, cd_ax)
        title = PANELS[panel] + (" (honest peers)" if panel else "")
        acc_ax.set(ylabel="mean test accuracy over peers", ylim=(0, 1), title=title)
        cd_ax.set(ylabel="consensus distance", yscale="log", title=title)
        for ax in (acc_ax, cd_ax):
            ax.set_xlabel("training budget used (passes over the train split = W1 epochs)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("W1 digits, 16 peers: band = min-max over peers; every run gets W1's 100 epochs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(results: list[Result]) -> None:
    final = {r.name: r.rounds[-1].test_accuracy or math.nan for r in results}
    fedavg, clean = final.get(FEDAVG, math.nan), final.get(CLEAN, math.nan)
    print(
        f"\n{'run':<42}{'rounds':>7}{'acc':>8}{'min':>7}{'max':>7}{'avg-model':>10}"
        f"{'consensus':>11}{'vs FedAvg':>10}{'vs clean':>9}{'wall s':>8}"
    )
    for r in results:
        m, acc = r.rounds[-1], final[r.name]
        e = {k: float(v) for k, v in m.extra.items() if isinstance(v, int | float)}
        print(
            f"{r.name:<42}{len(r.rounds):>7}{acc:>8.4f}"
            f"{e.get('accuracy_min', acc):>7.3f}{e.get('accuracy_max', acc):>7.3f}"
            f"{e.get('average_model_accuracy', acc):>10.4f}"
            f"{e.get('consensus_distance', 0.0):>11.3g}"
            f"{100 * (acc - fedavg):>+10.1f}{100 * (acc - clean):>+9.1f}{r.seconds:>8.1f}"
        )
    print(
        "acc: mean over honest peers of each peer's own model (FedAvg: the global model);\n"
        "avg-model: the honest peers' averaged model; vs columns: points of accuracy"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--steps", type=int, default=1, help="D-PSGD minibatches per round")
    parser.add_argument("--only", nargs="*", default=None, help="run-name prefixes to keep")
    args = parser.parse_args()
    torch.set_num_threads(1)  # 16 tiny models: threads only add contention on 2 cores
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"W1 budget: {BUDGET} sample-gradients; D-PSGD {args.steps} step(s) of {BATCH} per round")
    results = [
        run(*scenario)
        for scenario in scenarios(args.steps)
        if not args.only or any(scenario[1].startswith(p) for p in args.only)
    ]
    plot(results, args.out / "p2p.png")
    metrics = {r.name: [m.to_json() for m in r.rounds] for r in results}
    (args.out / "p2p_metrics.json").write_text(json.dumps(metrics) + "\n")
    table(results)
    print(f"plot written to {args.out / 'p2p.png'}")


if __name__ == "__main__":
    main()
