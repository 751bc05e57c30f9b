"""Write per-site CSVs of machine sensor readings: three plants, each with its own drift.

Readings follow the shape of the AI4I 2020 predictive maintenance data (Matzka 2020): product
type (L/M/H), air and process temperature [K], rotational speed [rpm], torque [Nm], tool wear
[min], and whether the machine failed. Failures come from the physical causes of that data
set (tool wear, heat dissipation, power, overstrain) plus a little random noise; each plant
runs hotter or faster and wears its tools at its own rate, so its failure rate differs.

    python make_data.py [--out data] [--seed 0] [--broken]

``--broken`` also writes ``data-broken/``: the same plants, one of them with a text value in
a numeric column, to see a site refused.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

# plant: (rows, air temperature shift [K], speed shift [rpm], tool wear per hour, noise rate)
PLANTS = {
    "plant-a": (3000, 0.0, 0.0, 1.0, 0.01),
    "plant-b": (2400, 2.5, -90.0, 1.15, 0.01),
    "plant-c": (1800, -1.5, 120.0, 0.7, 0.01),
}
COLUMNS = [
    "type", "air_temperature", "process_temperature", "rotational_speed", "torque",
    "tool_wear", "failure",
]  # fmt: skip


def plant_rows(
    rng: np.random.Generator, n: int, dt: float, ds: float, wear: float, noise: float
) -> list[list[object]]:
    """``n`` readings of one plant with its drift; failures by physical cause."""
    kind = rng.choice(["L", "M", "H"], n, p=[0.5, 0.3, 0.2])
    air = 300.0 + dt + rng.normal(0, 2.0, n)
    process = air + 10.0 + rng.normal(0, 1.0, n)
    speed = 1540.0 + ds + rng.normal(0, 150.0, n)
    torque = np.clip(40.0 - (speed - 1540.0) * 0.03 + rng.normal(0, 9.0, n), 3.0, None)
    tool = np.clip(rng.uniform(0, 230, n) * wear, 0, 260)
    power = torque * speed * 2 * np.pi / 60
    limit = np.select([kind == "L", kind == "M"], [11000.0, 12000.0], 13000.0)
    failed = (
        (tool > 215)
        | ((process - air < 8.6) & (speed < 1380))
        | (power < 3500)
        | (power > 9000)
        | (tool * torque > limit)
    )
    failed ^= rng.random(n) < noise
    return [
        [k, f"{a:.1f}", f"{p:.1f}", f"{s:.0f}", f"{t:.1f}", f"{w:.0f}", int(f)]
        for k, a, p, s, t, w, f in zip(kind, air, process, speed, torque, tool, failed, strict=True)
    ]


def write(folder: Path, seed: int, broken: str | None = None) -> None:
    """One CSV per plant in ``folder``; ``broken`` plant gets a text value in ``torque``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (plant, params) in enumerate(PLANTS.items()):
        rows = plant_rows(np.random.default_rng([seed, i]), *params)
        if plant == broken:
            rows[41][4] = "fault"  # data row 42: a sensor that wrote text
        with open(folder / f"{plant}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            w.writerows(rows)
        rate = sum(int(r[-1]) for r in rows) / len(rows)
        print(f"{folder / plant}.csv: {len(rows)} readings, failure rate {rate:.1%}")


def main() -> None:
    """Parse the arguments and write the plants' CSVs."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--broken", action="store_true")
    args = ap.parse_args()
    write(args.out, args.seed)
    if args.broken:
        write(args.out.parent / "data-broken", args.seed, broken="plant-c")


if __name__ == "__main__":
    main()
