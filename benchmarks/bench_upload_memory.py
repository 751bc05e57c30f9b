"""Coordinator memory under concurrent uploads: peak RSS with c updates arriving at once.

    python benchmarks/bench_upload_memory.py [--mb 60] [--concurrency 5,20]
        [--max-uploads K] [--json out.json]

For each ``c`` of ``--concurrency``, a real coordinator process
(``murmura.node.coordinator.Coordinator``, FedAvg, mTLS, one ``--mb`` MB float32 tensor) runs
one round with ``c + 1`` workers, played by this process: one thread, certificate and channel
each. Every worker pulls the model; then ``c`` of them push their updates at once. The figure
is the coordinator's peak RSS (``VmHWM``) up to the moment all ``c`` pushes are acknowledged,
and, apart, its peak during the pushes alone (reset through ``/proc/PID/clear_refs`` after
the pulls). The last worker pushes only then and closes the round, so aggregation and the
checkpoint never count. ``--max-uploads`` sets ``ServerOptions.max_concurrent_uploads``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from murmura.transport import keys
from murmura.transport.grpc_client import CoordinatorLink, LinkOptions
from murmura.transport.proto import murmura_pb2 as pb
from murmura.types import FitRes, Layout

MIB = 1 << 20


def _layout(dim: int) -> Layout:
    return Layout(("w",), ((dim,),))


def _creds(root: Path, name: str) -> keys.Credentials:
    f = keys.node_files(root, name)
    return keys.Credentials.load(f.cert, f.key, f.ca)


def _coordinator(a: argparse.Namespace) -> None:
    """The coordinator process: ``a.rounds`` FedAvg rounds over every node, then exit."""
    from murmura.node.coordinator import Coordinator, CoordinatorSettings
    from murmura.strategy import FedAvg
    from murmura.transport.grpc_server import ServerOptions

    names = a.names.split(",")
    settings = CoordinatorSettings(
        state_dir=Path(a.state),
        rounds=1,
        run_name="bench",
        round_timeout_s=600,
        min_nodes=len(names),
        join_timeout_s=120,
        heartbeat_s=1.0,
        lost_after_s=600,
        evaluate_every=0,
        shutdown_grace_s=0.5,
    )
    extra = {} if a.max_uploads is None else {"max_concurrent_uploads": a.max_uploads}
    server = ServerOptions(
        port=a.port,
        credentials=_creds(Path(a.keys), "coordinator"),
        allowlist=frozenset(names),
        **extra,
    )
    weights = np.zeros(a.dim, dtype=np.float32)
    strategy = FedAvg(min_clients=len(names), seed=0)
    coord = Coordinator(strategy, weights, _layout(a.dim), settings, server)
    asyncio.run(coord.run())


def _status(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` figure in bytes (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak(pid: int) -> None:
    """Reset the peak RSS of ``pid`` to its current RSS (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _each(fn: object, items: list[str]) -> None:
    """Run ``fn(item)`` in one thread per item; re-raise the first error."""
    errors: list[BaseException] = []

    def run(item: str) -> None:
        try:
            fn(item)  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def measure(dim: int, concurrency: int, max_uploads: int | None, workdir: Path) -> dict[str, float]:
    """One coordinator, ``concurrency`` workers pushing at once: its peak RSS in MiB."""
    # one more worker than pushes: it closes the round after the peak is read, so the
    # round's aggregation and checkpoint never count in the upload figure
    names = [f"w{i:02d}" for i in range(concurrency + 1)]
    root = workdir / "keys"
    keys.init_ca(root)
    keys.issue(root, "coordinator", "coordinator")
    for n in names:
        keys.issue(root, n, "worker")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    args = [
        sys.executable, __file__, "_coordinator", "--keys", str(root), "--port", str(port),
        "--names", ",".join(names), "--dim", str(dim), "--state", str(workdir / "state"),
    ]  # fmt: skip
    if max_uploads is not None:
        args += ["--max-uploads", str(max_uploads)]
    log = open(workdir / "coordinator.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    layout = _layout(dim)
    update = np.random.default_rng(0).standard_normal(dim).astype(np.float32) * np.float32(0.01)
    opts = LinkOptions(pull_wait_s=2.0, backoff_initial_s=0.1, backoff_max_s=0.5, max_retry_s=60)
    links = {n: CoordinatorLink(f"127.0.0.1:{port}", n, _creds(root, n), opts) for n in names}
    pulls = threading.Semaphore(4)  # this process need not hold 20 models at once

    def pull(n: str) -> None:
        while True:
            with pulls:
                ins = links[n].pull(0)
            if ins.kind == pb.FIT:
                return
            if proc.poll() is not None:
                raise RuntimeError("the coordinator exited")

    try:
        _each(lambda n: links[n].register(), names)
        _each(pull, names)
        time.sleep(0.5)
        pulled = _status(proc.pid, "VmHWM")
        base = _status(proc.pid, "VmRSS")
        _reset_peak(proc.pid)
        t0 = time.perf_counter()
        _each(lambda n: _push(links[n], update, layout), names[:-1])
        seconds = time.perf_counter() - t0
        peak = _status(proc.pid, "VmHWM")
        _push(links[names[-1]], update, layout)
        proc.wait(timeout=120)
    finally:
        for link in links.values():
            link.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    if proc.returncode != 0:
        raise RuntimeError(f"coordinator exited with {proc.returncode}; see {workdir}")
    return {
        "concurrency": concurrency,
        "peak_rss_mb": max(peak, pulled) / MIB,
        "push_peak_rss_mb": peak / MIB,
        "rss_before_pushes_mb": base / MIB,
        "push_seconds": seconds,
    }


def _push(link: CoordinatorLink, update: np.ndarray, layout: Layout) -> None:
    reply = link.push(1, FitRes(update, 10), layout)
    if not reply.accepted:
        raise RuntimeError(f"{link.node}: push refused: {reply.reason}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("role", nargs="?", default="bench", choices=["bench", "_coordinator"])
    p.add_argument("--mb", type=float, default=60.0, help="update size in MB (10^6 bytes)")
    p.add_argument("--concurrency", default="5,20")
    p.add_argument("--max-uploads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the figures here")
    # the coordinator process
    p.add_argument("--keys", default="")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--names", default="")
    p.add_argument("--dim", type=int, default=0)
    p.add_argument("--state", default="")
    a = p.parse_args()
    if a.role == "_coordinator":
        _coordinator(a)
        return
    dim = int(a.mb * 1e6) // 4
    rows = []
    for c in (int(c) for c in a.concurrency.split(",")):
        with tempfile.TemporaryDirectory(prefix="murmura-upmem-") as tmp:
            rows.append(measure(dim, c, a.max_uploads, Path(tmp)))
    out: dict[str, object] = {"update_mb": 4 * dim / MIB, "max_uploads": a.max_uploads}
    print(f"update {out['update_mb']:.1f} MiB, max_uploads {a.max_uploads}")
    for row in rows:
        print(
            f"  {row['concurrency']:>3.0f} concurrent: peak RSS {row['peak_rss_mb']:7.1f} MiB, "
            f"during the pushes {row['push_peak_rss_mb']:7.1f} MiB (from "
            f"{row['rss_before_pushes_mb']:.1f} MiB), pushes took {row['push_seconds']:.1f} s"
        )
    out["rounds"] = rows
    if len(rows) >= 2:
        ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
        out["ratio"] = ratio
        first, last = rows[0]["concurrency"], rows[-1]["concurrency"]
        print(f"  peak ratio {last:.0f} vs {first:.0f}: {ratio:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
