"""A site reading its own data: 1,000,000 rows x 20 columns from Parquet, and from CSV.

Writes the data once (19 float32 features and a 0/1 label) to a temporary folder, then, each
in a fresh process (so peak memory is that process's own), times and measures:

- ``pyarrow``: ``pyarrow.parquet.read_table`` of the file (the reference);
- ``murmura parquet``: ``read_local`` (read, check against the schema, encode to float32);
- ``pyarrow csv`` and ``murmura csv``: the same from the CSV file (reported beside it; no
  target).

Peak memory is the rise of the process's peak RSS over the step, against the float32 array
of the file (rows x 20 x 4 bytes). Targets (issue 14): murmura's Parquet load within 1.5x of
pyarrow's read, and its peak memory within 2x of the float32 array.

    .venv/bin/python benchmarks/bench_sources.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COLS = 20
FEATURES = [f"f{i}" for i in range(COLS - 1)]
SCHEMA = {"label": "label", "classes": [0, 1], "features": FEATURES}


def write_files(folder: Path, rows: int) -> tuple[Path, Path]:
    """The benchmark's Parquet and CSV files (same values)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    arrays = [pa.array(rng.normal(size=rows).astype(np.float32)) for _ in FEATURES]
    arrays.append(pa.array(rng.integers(0, 2, rows)))
    table = pa.table(arrays, names=[*FEATURES, "label"])
    parquet, csv = folder / "site.parquet", folder / "site.csv"
    pq.write_table(table, parquet)
    pacsv.write_csv(table, csv)
    return parquet, csv


def peak_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(step: str, path: str) -> None:
    """Run one step in this process and print its seconds and peak memory rise as JSON."""
    import pyarrow.parquet as pq

    from murmura.data.schema import schema_from_mapping
    from murmura.data.sources import file_source
    from murmura.data.validate import read_local

    schema = schema_from_mapping(SCHEMA)
    before = peak_mb()
    start = time.perf_counter()
    if step == "pyarrow":
        rows = pq.read_table(path).num_rows
    elif step == "pyarrow-csv":
        from pyarrow import csv

        rows = csv.read_csv(path).num_rows
    else:
        rows = len(read_local(schema, [file_source(Path(path))], "bench"))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb() - before, "rows": rows}))


def run_step(step: str, path: Path, repeats: int = 3) -> dict[str, float]:
    """Best seconds and largest peak of ``repeats`` fresh processes running ``step``."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--measure", step, str(path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    return {
        "seconds": min(r["seconds"] for r in runs),
        "peak_mb": max(r["peak_mb"] for r in runs),
    }


def main() -> None:
    """Write the files, measure each step, print figures and ratios against the targets."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--measure", nargs=2, metavar=("STEP", "PATH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        measure(*a.measure)
        return
    with tempfile.TemporaryDirectory() as tmp:
        parquet, csv = write_files(Path(tmp), a.rows)
        array_mb = a.rows * COLS * 4 / 2**20
        ref = run_step("pyarrow", parquet)
        ours = run_step("murmura", parquet)
        text = run_step("murmura", csv)
        ref_text = run_step("pyarrow-csv", csv)
    print(f"{a.rows:,} rows x {COLS} columns; float32 array {array_mb:.1f} MiB")
    print(f"{'step':<18}{'seconds':>9}{'peak MiB':>10}")
    steps = (
        ("pyarrow parquet", ref),
        ("murmura parquet", ours),
        ("pyarrow csv", ref_text),
        ("murmura csv", text),
    )
    for name, r in steps:
        print(f"{name:<18}{r['seconds']:>9.3f}{r['peak_mb']:>10.1f}")
    speed = ours["seconds"] / ref["seconds"]
    memory = ours["peak_mb"] / array_mb
    print(f"parquet load / pyarrow read: {speed:.2f}x (target <= 1.5x)")
    print(f"parquet peak / float32 array: {memory:.2f}x (target <= 2x)")
    print(
        f"csv load / pyarrow csv read: {text['seconds'] / ref_text['seconds']:.2f}x, "
        f"peak {text['peak_mb'] / array_mb:.2f}x the array"
    )


if __name__ == "__main__":
    main()
