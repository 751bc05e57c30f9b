"""Deploy the predictive-maintenance job: a coordinator and three plants, each on its own CSV.

Every plant is a ``murmura client --site sites/plant-X.toml`` process that reads only its own
file (the site config says where it is); the coordinator holds no data path. All talk gRPC
over mutual TLS on 127.0.0.1 with fresh certificates. At the end the script prints the final
federated accuracy (the plants evaluate on their held-out 20%); with ``--compare`` it also
runs the simulation of the same job (``murmura run config.toml``) and prints both.

    python make_data.py && python run_sites.py [--compare] [--data data] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from murmura.transport import keys

HERE = Path(__file__).resolve().parent
PLANTS = ["plant-a", "plant-b", "plant-c"]
SERVER = """
[server]
host = "127.0.0.1"
port = {port}
cert = "{keys}/coordinator.pem"
key = "{keys}/coordinator.key"
ca = "{keys}/ca.pem"
allowlist = {allowlist}
state_dir = "{state}"
min_nodes = 3
round_timeout = 60
join_timeout = 120
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def setup(workdir: Path, port: int, data: Path) -> Path:
    """Certificates, the coordinator's config (the job plus [server]) and the site configs."""
    key_dir = workdir / "keys"
    keys.init_ca(key_dir)
    keys.issue(key_dir, "coordinator", "coordinator")
    for plant in PLANTS:
        keys.issue(key_dir, plant, "worker")
        (workdir / f"{plant}.toml").write_text(f'[data]\npath = "{data.resolve()}/{plant}.csv"\n')
    server = SERVER.format(
        port=port, keys=key_dir, allowlist=json.dumps(PLANTS), state=workdir / "state"
    )
    job = workdir / "server.toml"
    job.write_text((HERE / "config.toml").read_text() + server)
    return job


def launch(
    workdir: Path, job: Path, port: int, rounds: int | None = None
) -> list[subprocess.Popen[bytes]]:
    """The coordinator, then one site process per plant; each logs to ``workdir/NAME.log``.

    ``rounds`` overrides the job's ``run.rounds`` at the coordinator (which drives them).
    """
    cli = [sys.executable, "-m", "murmura.node.cli"]
    k = workdir / "keys"

    def start(name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(workdir / f"{name}.log", "wb") as log:
            return subprocess.Popen([*cli, *args], stdout=log, stderr=subprocess.STDOUT, cwd=HERE)

    more = [] if rounds is None else ["--set", f"run.rounds={rounds}"]
    procs = [start("coordinator", ["server", str(job), *more])]
    for plant in PLANTS:
        tls = ["--cert", f"{k}/{plant}.pem", "--key", f"{k}/{plant}.key", "--ca", f"{k}/ca.pem"]
        site = ["--site", str(workdir / f"{plant}.toml"), "--config", str(HERE / "config.toml")]
        procs.append(start(plant, ["client", "--server", f"127.0.0.1:{port}", *site, *tls]))
    return procs


def deployed_accuracy(workdir: Path, data: Path, timeout: float) -> float:
    """Run the deployment; the coordinator's final federated accuracy."""
    port = free_port()
    procs = launch(workdir, setup(workdir, port, data), port)
    try:
        procs[0].wait(timeout)
        for p in procs[1:]:
            p.wait(30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if procs[0].returncode != 0:
        sys.exit(f"the coordinator failed; see {workdir}/coordinator.log")
    state = workdir / "state"
    run = state / "runs" / (state / "latest").read_text().strip()
    return float(json.loads((run / "summary.json").read_text())["final_federated_accuracy"])


def simulated_accuracy(workdir: Path, data: Path) -> float:
    """Run the simulation of the same job; its final federated accuracy."""
    out = workdir / "sim"
    cmd = [sys.executable, "-m", "murmura", "run", str(HERE / "config.toml"), "--out", str(out)]
    subprocess.run([*cmd, "--set", f'partition.path="{data}"'], check=True, cwd=HERE)
    (summary,) = out.glob("*/summary.json")
    return float(json.loads(summary.read_text())["final_federated_accuracy"])


def main() -> int:
    """Deploy (and with --compare simulate), then print the final federated accuracies."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE / "data")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--compare", action="store_true")
    a = ap.parse_args()
    data = a.data.resolve()
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="murmura-sites-"))
    workdir.mkdir(parents=True, exist_ok=True)
    deployed = deployed_accuracy(workdir, data, a.timeout)
    print(f"workdir: {workdir}")
    print(f"deployed (3 site processes): final federated accuracy {deployed:.4f}")
    if a.compare:
        simulated = simulated_accuracy(workdir, data)
        print(f"simulated (kind = 'files'):  final federated accuracy {simulated:.4f}")
        print(f"difference: {abs(deployed - simulated) * 100:.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
