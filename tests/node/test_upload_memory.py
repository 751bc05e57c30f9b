"""RELIABILITY 30: a coordinator's peak memory does not grow with concurrent uploads.

``benchmarks/bench_upload_memory.py`` starts a real coordinator process per run (FedAvg, mTLS,
default ``max_concurrent_uploads`` of 4) and plays its workers, with 32 MB updates.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "benchmarks" / "bench_upload_memory.py"


@pytest.mark.slow
def test_peak_rss_does_not_grow_with_concurrent_uploads(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    args = ["--mb", "32", "--concurrency", "4,12", "--json", str(out)]
    subprocess.run([sys.executable, str(BENCH), *args], check=True, timeout=240)
    figures = json.loads(out.read_text())
    update_mib = figures["update_mb"]
    four, twelve = (row["peak_rss_mb"] for row in figures["rounds"])
    # 8 more pushes wait for a slot, each holding only its 2 MiB stream window and connection
    # buffers (measured: 76 MiB in all); unbounded, they held 8 updates and more (323 MiB)
    assert twelve - four < 4 * update_mib, figures
