"""SHA-256 of the final model of short simulated runs of the example configs.

A refactoring that must not change behaviour records the digests before and after and
compares them: ``python benchmarks/model_digests.py > before.txt``, change the code, run it
again and ``diff``. Every run is shortened to 3 rounds and 20 clients so the whole set takes
a minute; the digest is of the final model's float32 bytes.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np

from murmura.config import load_config
from murmura.sim.builder import build_experiment

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHORT = ["run.rounds=3", "partition.num_clients=20", "client.epochs=1", "evaluation.every=0"]
CONFIGS: list[tuple[str, list[str]]] = [
    ("digits-fedavg.toml", []),
    ("digits-fedavg.toml", ["strategy.name='scaffold'"]),
    ("digits-fedavg.toml", ["strategy.name='fedadam'", "strategy.server_lr=0.05"]),
    ("digits-dp.toml", []),
    ("digits-dsgd-torus.toml", []),
    ("digits-hierarchical.toml", []),
    ("digits-hierarchical-dp.toml", []),
    ("digits-qsgd.toml", []),
    ("digits-secagg.toml", []),
    ("digits-topkq.toml", []),
    ("robustness.toml", []),
    ("synthetic-1000.toml", []),
    ("digits-fedavg.toml", ["evaluation.federated=true", "evaluation.every=1"]),
    ("digits-hierarchical.toml", ["secagg.enabled=true"]),
    ("digits-hierarchical.toml", ["attack.kind='sign_flip'", "attack.fraction=0.2"]),
    ("digits-dsgd-torus.toml", ["privacy.mode='local'", "privacy.noise_multiplier=0.5"]),
    ("digits-dsgd-torus.toml", ["privacy.dp_sgd=true", "privacy.dp_sgd_noise_multiplier=1.0"]),
]


def digest(name: str, overrides: list[str]) -> str:
    """The SHA-256 of the final model of ``name`` shortened, with ``overrides``."""
    cfg = load_config(EXAMPLES / name, SHORT + overrides)
    sim = build_experiment(cfg).simulation
    sim.run(cfg.run.rounds)
    return hashlib.sha256(np.ascontiguousarray(sim.model(), dtype=np.float32).tobytes()).hexdigest()


def main() -> None:
    for name, overrides in CONFIGS:
        t0 = time.perf_counter()
        sha = digest(name, overrides)
        label = " ".join([name, *overrides])
        print(f"{sha}  {label}  ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        print(f"{sha}  {label}", flush=True)


if __name__ == "__main__":
    main()
