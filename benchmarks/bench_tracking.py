"""The cost of ``[tracking] mlflow`` per round on W1, as a ratio to the same run untracked.

Both runs go through what ``murmura run`` does per round: ``metrics.jsonl`` through
``RunDirectory``, and, for the tracked one, the tracker fed the same line (a local SQLite
MLflow store beside the run folder, as by default). Prints the round loop of each, the
time spent in the tracker per round, and the one-off costs (importing MLflow and opening
the store, logging the run folder at the end). ``--rounds`` shortens W1; ``--uri`` tracks
to a tracking server instead.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
W1 = ROOT / "examples" / "digits-fedavg.toml"


def one_run(out: Path, rounds: int, tracked: bool, uri: str | None) -> dict[str, float]:
    """Run W1 once; the loop's seconds and, when tracked, the tracker's share."""
    from murmura.config import load_config
    from murmura.ops.run_dir import RunDirectory
    from murmura.ops.tracked_run import end_tracking, start_tracking
    from murmura.sim.builder import build_experiment
    from murmura.types import RoundMetrics, Vector

    sets = [f"run.rounds={rounds}", f"tracking.mlflow={str(tracked).lower()}"]
    if tracked and uri:
        sets.append(f"tracking.tracking_uri={uri}")
    cfg = load_config(W1, sets)
    exp = build_experiment(cfg)
    run_dir = RunDirectory(out, cfg.run.name)
    resolved = cfg.model_dump(mode="json")
    t0 = time.perf_counter()
    tracker = start_tracking(resolved, run_dir.path, run_dir.run_id)
    opened = time.perf_counter() - t0
    per_round: list[float] = []

    def on_round(m: RoundMetrics, _w: Vector) -> None:
        run_dir.log_round(m)
        if tracker is not None:
            t = time.perf_counter()
            tracker.log_round(m.to_json())
            per_round.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    history = exp.simulation.run(cfg.run.rounds, on_round=on_round)
    loop = time.perf_counter() - t0
    run_dir.finish(history.weights, exp.model.layout, {"rounds": len(history.rounds)})
    t0 = time.perf_counter()
    end_tracking(tracker, resolved, run_dir.path)
    ended = time.perf_counter() - t0
    return {
        "loop": loop,
        "rounds": len(history.rounds),
        "opened": opened,
        "ended": ended,
        "per_round": statistics.median(per_round) if per_round else 0.0,
        "per_round_max": max(per_round, default=0.0),
        "accuracy": float(history.rounds[-1].test_accuracy or 0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternating")
    parser.add_argument("--uri", default=None, help="MLflow tracking server (default: local)")
    args = parser.parse_args()
    plain: list[dict[str, float]] = []
    tracked: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        one_run(Path(tmp), 2, False, None)  # warm-up: data, threads, caches
        for _ in range(args.repeats):
            plain.append(one_run(Path(tmp), args.rounds, False, None))
            tracked.append(one_run(Path(tmp), args.rounds, True, args.uri))
    n = plain[0]["rounds"]

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    where = args.uri or "a local SQLite store"
    print(f"W1, {n} rounds, 100 clients, median of {args.repeats}; tracked to {where}")
    print(f"{'':12} {'loop s':>8} {'s/round':>8} {'accuracy':>9}")
    for name, rows in (("untracked", plain), ("tracked", tracked)):
        loop = med(rows, "loop")
        print(f"{name:12} {loop:8.2f} {loop / n:8.3f} {med(rows, 'accuracy'):9.4f}")
    share, base = med(tracked, "per_round"), med(plain, "loop") / n
    print(f"tracker per round: median {share * 1000:.1f} ms, max "
          f"{max(r['per_round_max'] for r in tracked) * 1000:.1f} ms "
          f"({share / base * 100:.2f}% of an untracked round)")  # fmt: skip
    first, ended = tracked[0]["opened"], med(tracked, "ended")
    print(f"one-off: open (import MLflow, store) {med(tracked, 'opened'):.2f} s "
          f"(first {first:.2f} s), end (artifacts) {ended:.2f} s")  # fmt: skip
    print(f"ratio loop (tracked / untracked): {med(tracked, 'loop') / med(plain, 'loop'):.3f}")
    whole = med(tracked, "loop") + med(tracked, "opened") + med(tracked, "ended")
    print(f"ratio with the one-off costs: {whole / med(plain, 'loop'):.3f}")


if __name__ == "__main__":
    main()
