"""Start-up time of the ``murmura`` command: what each command pays before doing its work.

Runs, interleaved so that a loaded machine weighs on all alike, ``--repeat`` times each:
``python -c pass`` and ``python -c "import torch"`` (baselines), ``murmura --help``,
``murmura tasks`` and ``murmura run`` of workload W1 (examples/digits-fedavg.toml), and
prints the medians with the ratio to each limit:

- ``--help`` and ``tasks``: under 0.5 s;
- W1: the whole process within 1.3 s of ``import torch`` plus the run's own in-process time
  (``wall_seconds`` in its summary.json): ``overhead = wall - torch - in_process <= 1.3``.

Each figure is given in wall and in CPU seconds (user + sys of the child): on a loaded
machine wall times stretch, CPU times much less; on an idle one they agree for start-up (one
thread). W1's in-process CPU time is measured by a separate child that builds and runs the
same experiment and times that region with ``time.process_time``.

``--src DIR`` measures another checkout's ``src`` (an older commit, for before/after).
``--importtime`` also prints the W1 run's slowest top-level imports (``python -X importtime``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
W1 = ROOT / "examples" / "digits-fedavg.toml"
LIMIT_COMMAND_S = 0.5
LIMIT_W1_OVERHEAD_S = 1.3
TORCH = "python -c 'import torch'"
MURMURA = "import sys; from murmura.cli import app; sys.exit(app(prog_name='murmura'))"
# The region `murmura run` reports as wall_seconds (build the experiment, run its rounds),
# timed in CPU seconds in a process of its own.
IN_PROCESS_CPU = f"""
import time
from murmura.config import load_config
from murmura.sim.builder import build_experiment
cfg = load_config({str(W1)!r})
start = time.process_time()
build_experiment(cfg).simulation.run(cfg.run.rounds)
print(time.process_time() - start)
"""


CPU: dict[str, list[float]] = {}  # CPU seconds (user + sys) per command: steadier under load


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict[str, str], name: str = "") -> tuple[float, str]:
    """Wall seconds of one child process, and its stderr; a failure stops the benchmark."""
    cpu, start = _children_cpu(), time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    if name:
        CPU.setdefault(name, []).append(_children_cpu() - cpu)
    return wall, proc.stderr


def w1_run(
    env: dict[str, str], extra: list[str] | None = None, name: str = ""
) -> tuple[float, float, str]:
    """(wall seconds, in-process seconds from summary.json, stderr) of one W1 run."""
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, *(extra or []), "-c", MURMURA, "run", str(W1), "--out", out]
        wall, err = timed(argv, env, name)
        (summary,) = Path(out).glob("*/summary.json")
        return wall, float(json.loads(summary.read_text())["wall_seconds"]), err


def in_process_cpu(env: dict[str, str]) -> float:
    """CPU seconds of W1's in-process region (what its summary's wall_seconds times)."""
    argv = [sys.executable, "-c", IN_PROCESS_CPU]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def top_imports(importtime: str, n: int = 12) -> list[tuple[float, str]]:
    """The ``n`` slowest top-level imports (cumulative seconds, module) of a -X importtime log."""
    rows = []
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if cumulative.strip().isdigit() and not name.startswith("  "):  # depth 0 only
            rows.append((int(cumulative) / 1e6, name.strip()))
    return sorted(rows, reverse=True)[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the murmura to measure")
    parser.add_argument("--importtime", action="store_true", help="W1's slowest imports too")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve())}
    py = sys.executable
    commands = {
        "python -c pass": [py, "-c", "pass"],
        TORCH: [py, "-c", "import torch"],
        "murmura --help": [py, "-c", MURMURA, "--help"],
        "murmura tasks": [py, "-c", MURMURA, "tasks"],
    }
    names = [*commands, "W1 run", "W1 in-process"]
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeat):
        for name, argv in commands.items():
            times[name].append(timed(argv, env, name)[0])
        wall, inside, _ = w1_run(env, name="W1 run")
        times["W1 run"].append(wall)
        times["W1 in-process"].append(inside)
        CPU.setdefault("W1 in-process", []).append(in_process_cpu(env))
    med = {name: statistics.median(values) for name, values in times.items()}
    cpu = {name: statistics.median(values) for name, values in CPU.items()}
    print(f"murmura start-up, {args.src}, medians of {args.repeat} runs (seconds)")
    print(f"  {'':26s} {'wall':>7s} {'cpu':>7s}   (wall of each run)")
    for name, value in med.items():
        spread = ", ".join(f"{v:.2f}" for v in times[name])
        cpu_s = f"{cpu[name]:7.2f}" if name in cpu else " " * 7
        print(f"  {name:26s} {value:7.2f} {cpu_s}   ({spread})")
    for name in ("murmura --help", "murmura tasks"):
        print(
            f"{name}: {med[name]:.2f} s (cpu {cpu[name]:.2f} s), limit {LIMIT_COMMAND_S} s, "
            f"ratio {med[name] / LIMIT_COMMAND_S:.2f} (cpu {cpu[name] / LIMIT_COMMAND_S:.2f})"
        )
    for label, t in (("wall", med), ("cpu", cpu)):
        overhead = t["W1 run"] - t[TORCH] - t["W1 in-process"]
        print(
            f"W1 overhead ({label}): run {t['W1 run']:.2f} - import torch {t[TORCH]:.2f} - "
            f"in-process {t['W1 in-process']:.2f} = {overhead:.2f} s, limit "
            f"{LIMIT_W1_OVERHEAD_S} s, ratio {overhead / LIMIT_W1_OVERHEAD_S:.2f}"
        )
    if args.importtime:
        _, _, err = w1_run(env, ["-X", "importtime"])
        print("W1's slowest top-level imports (cumulative s, one run):")
        for seconds, module in top_imports(err):
            print(f"  {seconds:6.2f}  {module}")


if __name__ == "__main__":
    main()
