"""A ``murmura run`` session: the round loop with its run folder, checkpoints, stop and resume.

``start`` builds a new run from a config; ``resume`` rebuilds one from its folder's
``config.toml`` and restores its newest checkpoint (``murmura.sim.checkpoint``), so that the
resumed run ends with the model an uninterrupted one would have, bit for bit. ``Session.run``
logs each round to ``metrics.jsonl``, checkpoints every ``[simulation] checkpoint_every``
rounds (keeping the newest ``keep_last``) and writes the final outputs
(``murmura.ops.run_dir.write_outputs``) with ``status`` "complete" or, when stopped early,
"interrupted": ``request_stop`` ends the run after the round in progress (checkpointed), a
``KeyboardInterrupt`` abandons that round and keeps what the last completed round left.
Star, tree and peer-to-peer runs alike.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from murmura.config import Config, load_config
from murmura.engine.run_loop import checkpoint_due
from murmura.errors import ConfigError
from murmura.node.checkpoint import prune_checkpoints
from murmura.ops.run_dir import (
    CONFIG_FILE,
    SUMMARY_FILE,
    RunDirectory,
    config_sha256,
    model_metadata,
)
from murmura.privacy.budget import privacy_summary
from murmura.sim.builder import Experiment, build_experiment
from murmura.sim.checkpoint import (
    AnySimulation,
    checkpoint_file,
    model_of,
    newest_checkpoint,
    save_simulation,
    state_holders,
)
from murmura.strategy.evaluation import federated_summary
from murmura.strategy.hooks import Stateful
from murmura.types import RoundMetrics, Vector

log = logging.getLogger(__name__)
RoundPrinter = Callable[[RoundMetrics], None]


class _Stop(Exception):
    """Raised after a completed round when a stop was requested."""


@dataclass(slots=True)
class Outcome:
    """How a session ended: status, rounds done, the summary written, the last round."""

    status: str
    rounds: int
    summary: dict[str, object]
    last: RoundMetrics | None
    resumable_from: int = 0
    """The newest checkpoint's round: where ``--resume`` goes on."""


@dataclass(slots=True)
class Session:
    """One simulated run in its folder, from ``start_round`` on."""

    cfg: Config
    exp: Experiment
    run_dir: RunDirectory
    start_round: int = 1
    stop_requested: bool = False
    finishing: bool = False
    """True once the outputs are being written: a signal then changes nothing."""
    _weights: Vector | None = None
    _done: int = 0
    _checkpointed: int = 0
    _holders: dict[str, Stateful] | None = None
    _started: float = field(default_factory=time.perf_counter)

    @property
    def checkpoints(self) -> bool:
        """Whether this run writes checkpoints (``checkpoint_every`` > 0).

        A clocked run (``[clock] enabled``) does not: its simulated time, clients in flight and
        FedBuff buffer are not in a checkpoint, so a resume could not equal an uninterrupted run.
        """
        return self.cfg.simulation.checkpoint_every > 0 and not self.cfg.clock.enabled

    def request_stop(self) -> None:
        """End the run after the round in progress (checkpointed, outputs written)."""
        self.stop_requested = True

    def run(self, on_round: RoundPrinter | None = None) -> Outcome:
        """Run the remaining rounds; write the final (or, when stopped, partial) outputs."""
        self._done = self._checkpointed = self.start_round - 1
        self._weights = model_of(self.exp.simulation) if self._done else None
        status = "complete"
        try:
            self.exp.simulation.run(
                self.cfg.run.rounds, self._round_done(on_round), self.start_round
            )
        except _Stop:
            status = "interrupted"
        except KeyboardInterrupt:
            status = "interrupted"
            log.warning(
                "round %d abandoned; the outputs are those of round %d", self._done + 1, self._done
            )
        if self._done == self.cfg.run.rounds:
            status = "complete"
        self.finishing = True
        return self._finish(status)

    def _round_done(self, on_round: RoundPrinter | None) -> Callable[[RoundMetrics, Vector], None]:
        sim, every = self.exp.simulation, self.cfg.simulation.checkpoint_every

        def done(m: RoundMetrics, weights: Vector) -> None:
            self.run_dir.log_round(m)
            self._done, self._weights = m.round, np.array(weights, copy=True)
            if on_round is not None:
                on_round(m)
            stop = self.stop_requested and m.round < self.cfg.run.rounds
            if self.checkpoints and checkpoint_due(m.round, every, stop):
                self._checkpoint(sim, m.round)
            if stop:
                raise _Stop

        return done

    def _checkpoint(self, sim: AnySimulation, round_: int) -> None:
        path = checkpoint_file(self.run_dir.path, round_)
        if self._holders is None:
            self._holders = state_holders(sim)
        meta = self._metadata(round_)
        save_simulation(path, sim, self.exp.model.layout, round_, meta, self._holders)
        prune_checkpoints(path.parent, self.cfg.simulation.keep_last)
        self._checkpointed = round_

    def _metadata(self, round_: int) -> dict[str, str]:
        return model_metadata(self.run_dir.run_id, round_, self.cfg.model_dump(mode="json"))

    def _finish(self, status: str) -> Outcome:
        rounds = self.run_dir.rounds
        last = rounds[-1] if rounds else None
        summary: dict[str, Any] = {
            "status": status,
            "rounds": self._done,
            "planned_rounds": self.cfg.run.rounds,
            "final_test_accuracy": None if last is None else last.test_accuracy,
            "final_test_loss": None if last is None else last.test_loss,
            "wall_seconds": round(time.perf_counter() - self._started, 3),
            "failures": sum(len(m.failures) for m in rounds),
            **privacy_summary(rounds, self.cfg.run.rounds),
            **federated_summary({} if last is None else last.to_json()),
        }
        if status != "complete":
            summary["resumable_from"] = self._checkpointed
        weights = self._weights if self._weights is not None else model_of(self.exp.simulation)
        self.run_dir.finish(weights, self.exp.model.layout, summary, self._metadata(self._done))
        return Outcome(status, self._done, summary, last, self._checkpointed)


def start(cfg: Config, out: Path | str | None = None) -> Session:
    """A new run of ``cfg`` in a new folder under ``out`` (default ``[run] out_dir``)."""
    exp = build_experiment(cfg)
    run_dir = RunDirectory.create(out or cfg.run.out_dir, cfg.run.name)
    run_dir.write_config(cfg.model_dump(mode="json"))
    return Session(cfg, exp, run_dir)


def resume(path: Path) -> Session:
    """The run in folder ``path``, rebuilt from its ``config.toml``, after its newest checkpoint.

    ``ConfigError`` for a folder that is not a run, or a finished run.
    """
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(f"--resume {path}: not a run folder (no {CONFIG_FILE})")
    status = _status(path)
    if status == "complete":
        raise ConfigError(
            f"--resume {path}: the run is complete ({SUMMARY_FILE}); nothing to resume"
        )
    cfg = load_config(path / CONFIG_FILE)
    if cfg.clock.enabled:
        raise ConfigError(
            f"--resume {path}: a run with [clock] enabled is not checkpointed (its simulated "
            "time and the updates in flight are not saved); start it again"
        )
    exp = build_experiment(cfg)
    sim = exp.simulation
    expected = config_sha256(cfg.model_dump(mode="json"))
    done = newest_checkpoint(path / "checkpoints", sim, exp.model.layout, expected)
    return Session(cfg, exp, RunDirectory.reopen(path, done), start_round=done + 1)


def _status(path: Path) -> str | None:
    try:
        summary = json.loads((path / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return summary.get("status", "complete") if isinstance(summary, dict) else None
