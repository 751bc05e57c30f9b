"""W1/W2 benchmark: murmura's simulation against a plain-torch loop doing the same client-epochs.

Prints wall time, peak RSS and final accuracy of both, and the ratios murmura / ideal for the
whole process and for the training loop alone. Each side runs in its own child process so peak
memory is measured per side (``wait4``'s ``ru_maxrss``). ``--workload W1|W2`` picks the
workload, ``--executor`` murmura's ``[simulation] executor``.

``--workload W1-tree`` times W1 through the two-level tree (examples/digits-hierarchical.toml,
root -> 4 edges -> 25 clients; the same model as flat FedAvg) against flat W1, both through
murmura's API, and prints the ratio of their round loops.

``--workload W1-checkpoint`` times W1 through ``murmura run``'s session (run folder, metrics,
final outputs) with ``[simulation] checkpoint_every`` 0 (never) and 1 (every round), each in
its own process, and prints the ratio and the cost of one checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
W1 = ROOT / "examples" / "digits-fedavg.toml"
W2 = ROOT / "examples" / "synthetic-1000.toml"
W1_TREE = ROOT / "examples" / "digits-hierarchical.toml"


def ideal(
    rounds: int = 20, clients: int = 100, epochs: int = 5, bs: int = 16, lr: float = 0.05
) -> dict[str, float]:
    """FedAvg on W1 written as a plain torch loop: no framework, the same batches."""
    import torch
    from torch import nn

    from murmura.data.partition import partition
    from murmura.seeding import client_generator
    from murmura.tasks.digits import load_digits_split

    torch.set_num_threads(1)  # the same setting murmura's simulation uses by default
    x_tr, y_tr, x_te, y_te = load_digits_split()
    parts = partition("dirichlet", y_tr, clients, 0, alpha=0.5)
    xs = [torch.from_numpy(x_tr[p]) for p in parts]
    ys = [torch.from_numpy(y_tr[p]) for p in parts]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    for r in range(1, rounds + 1):
        acc = {k: torch.zeros_like(v) for k, v in global_state.items()}
        total = 0
        for c in range(clients):
            model.load_state_dict(global_state)
            g = client_generator(0, r, c)
            n = len(xs[c])
            for _ in range(epochs):
                perm = torch.randperm(n, generator=g)
                for i in range(0, n, bs):
                    idx = perm[i : i + bs]
                    opt.zero_grad()
                    loss_fn(model(xs[c][idx]), ys[c][idx]).backward()
                    opt.step()
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    acc[k] += v * n
            total += n
        global_state = {k: v / total for k, v in acc.items()}
    loop = time.perf_counter() - t0
    model.load_state_dict(global_state)
    with torch.no_grad():
        accuracy = float(
            (model(torch.from_numpy(x_te)).argmax(1) == torch.from_numpy(y_te)).float().mean()
        )
    return {"loop_seconds": loop, "accuracy": accuracy}


def ideal_w2(
    rounds: int = 10, clients: int = 1000, cohort: int = 100, bs: int = 10, lr: float = 0.01
) -> dict[str, float]:
    """FedAvg on W2 as a plain torch loop: the same sampled clients and batches, no framework."""
    import numpy as np
    import torch
    from torch import nn

    from murmura.seeding import client_generator, round_rng
    from murmura.tasks.synthetic import synthetic_client

    torch.set_num_threads(1)
    train, held = [], []
    for c in range(clients):
        x, y = (torch.from_numpy(a) for a in synthetic_client(1.0, 1.0, 0, c))
        n_train = len(x) - int(round(0.2 * len(x)))
        train.append((x[:n_train], y[:n_train]))
        held.append((x[n_train:], y[n_train:]))
    torch.manual_seed(0)
    model = nn.Linear(60, 10)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    for r in range(1, rounds + 1):
        chosen = np.sort(round_rng(0, r).choice(clients, size=cohort, replace=False))
        acc = {k: torch.zeros_like(v) for k, v in global_state.items()}
        total = 0
        for c in chosen.tolist():
            model.load_state_dict(global_state)
            xs, ys = train[c]
            perm = torch.randperm(len(xs), generator=client_generator(0, r, c))
            for i in range(0, len(xs), bs):
                idx = perm[i : i + bs]
                opt.zero_grad()
                loss_fn(model(xs[idx]), ys[idx]).backward()
                opt.step()
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    acc[k] += v * len(xs)
            total += len(xs)
        global_state = {k: v / total for k, v in acc.items()}
    loop = time.perf_counter() - t0
    model.load_state_dict(global_state)
    x_te, y_te = torch.cat([h[0] for h in held]), torch.cat([h[1] for h in held])
    with torch.no_grad():
        accuracy = float((model(x_te).argmax(1) == y_te).float().mean())
    return {"loop_seconds": loop, "accuracy": accuracy}


def murmura_loop(config: Path, overrides: list[str]) -> dict[str, float]:
    """The same workload through murmura's builder and runtime, timing the round loop."""
    from murmura.config import load_config
    from murmura.sim.builder import build_experiment

    cfg = load_config(config, overrides)
    exp = build_experiment(cfg)
    t0 = time.perf_counter()
    history = exp.simulation.run(cfg.run.rounds)
    loop = time.perf_counter() - t0
    return {"loop_seconds": loop, "accuracy": float(history.rounds[-1].test_accuracy or 0.0)}


def session_loop(config: Path, overrides: list[str]) -> dict[str, float]:
    """W1 through ``murmura run``'s session in a temporary folder; the seconds of ``run``."""
    from murmura.config import load_config
    from murmura.sim import session as sessions

    cfg = load_config(config, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        s = sessions.start(cfg, tmp)
        t0 = time.perf_counter()
        s.run()
        seconds = time.perf_counter() - t0
        files = len(list(Path(s.run_dir.path, "checkpoints").glob("*.safetensors")))
    return {"loop_seconds": seconds, "rounds": cfg.run.rounds, "checkpoints_kept": files}


def checkpoint_cost(config: Path, overrides: list[str]) -> None:
    """W1's session with checkpoint_every 0 and 1, alternating, best of three each."""
    py, best = sys.executable, {0: float("inf"), 1: float("inf")}
    for _ in range(3):
        for every in (0, 1):
            sets = [
                a
                for s in [*overrides, f"simulation.checkpoint_every={every}"]
                for a in ("--set", s)
            ]
            _, _, out = child([py, __file__, "--role", "session", "--config", str(config), *sets])
            best[every] = min(best[every], json.loads(out)["loop_seconds"])
    rounds = json.loads(out)["rounds"]
    print(f"W1 session loop, checkpoint_every 0: {best[0]:.3f} s, 1: {best[1]:.3f} s")
    print(f"ratio (every round / never): {best[1] / best[0]:.3f}")
    print(f"cost of one checkpoint: {(best[1] - best[0]) / rounds * 1000:.1f} ms")


def child(args: list[str]) -> tuple[float, float, str]:
    """Run a child process; return (wall seconds, peak RSS MB, stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, cwd=ROOT, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"child {args} failed with status {status}")
    return wall, usage.ru_maxrss / 1024, out


def tree_against_flat(overrides: list[str]) -> None:
    """W1 through a tree and flat, each in its own process; the ratio of their round loops."""
    py, sets = sys.executable, [a for s in overrides for a in ("--set", s)]
    rows = []
    for name, config in (("flat W1 (API)", W1), ("tree W1 (API)", W1_TREE)):
        wall, mem, out = child([py, __file__, "--role", "murmura", "--config", str(config), *sets])
        rows.append((name, wall, json.loads(out)["loop_seconds"], mem, json.loads(out)["accuracy"]))
    print(f"{'':22} {'process s':>10} {'loop s':>8} {'peak MB':>8} {'accuracy':>9}")
    for name, wall, loop, mem, acc in rows:
        print(f"{name:22} {wall:10.2f} {loop:8.2f} {mem:8.0f} {acc:9.4f}")
    print(f"ratio loop (tree / flat): {rows[1][2] / rows[0][2]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", choices=["ideal", "murmura", "session"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--workload", choices=["W1", "W2", "W1-tree", "W1-checkpoint"], default="W1"
    )
    parser.add_argument("--config", type=Path, default=None, help="default: the workload's")
    parser.add_argument(
        "--executor",
        choices=["auto", "sequential", "vectorized", "process", "ray"],
        default=None,
        help="[simulation] executor for murmura (default: the config's)",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    if args.config is None:
        args.config = {"W1": W1, "W2": W2, "W1-tree": W1_TREE, "W1-checkpoint": W1}[args.workload]
    if args.executor is not None:
        args.overrides.append(f"simulation.executor={args.executor!r}")
    if args.role == "ideal":
        print(json.dumps(ideal() if args.workload == "W1" else ideal_w2()))
        return
    if args.role == "murmura":
        print(json.dumps(murmura_loop(args.config, args.overrides)))
        return
    if args.role == "session":
        print(json.dumps(session_loop(args.config, args.overrides)))
        return
    if args.workload == "W1-checkpoint":
        checkpoint_cost(args.config, args.overrides)
        return
    if args.workload == "W1-tree":
        tree_against_flat(args.overrides)
        return
    py = sys.executable
    i_wall, i_mem, i_out = child([py, __file__, "--role", "ideal", "--workload", args.workload])
    sets = [a for s in args.overrides for a in ("--set", s)]
    m_wall, m_mem, m_out = child(
        [py, __file__, "--role", "murmura", "--config", str(args.config), *sets]
    )
    with tempfile.TemporaryDirectory() as tmp:
        cli = [str(Path(py).parent / "murmura"), "run", str(args.config), "--out", tmp, *sets]
        c_wall, c_mem, _ = child(cli)
    ide, mur = json.loads(i_out), json.loads(m_out)
    rows = [
        ("ideal (plain torch)", i_wall, ide["loop_seconds"], i_mem, ide["accuracy"]),
        ("murmura (API)", m_wall, mur["loop_seconds"], m_mem, mur["accuracy"]),
        ("murmura run (CLI)", c_wall, float("nan"), c_mem, float("nan")),
    ]
    print(f"workload {args.workload}, executor {args.executor or 'from the config'}")
    print(f"{'':22} {'process s':>10} {'loop s':>8} {'peak MB':>8} {'accuracy':>9}")
    for name, wall, loop, mem, acc in rows:
        print(f"{name:22} {wall:10.2f} {loop:8.2f} {mem:8.0f} {acc:9.4f}")
    print(f"ratio loop (murmura / ideal):          {mur['loop_seconds'] / ide['loop_seconds']:.3f}")
    print(f"ratio whole process, API (murmura / ideal): {m_wall / i_wall:.3f}")
    print(f"ratio whole process, CLI (murmura / ideal): {c_wall / i_wall:.3f}")


if __name__ == "__main__":
    main()
