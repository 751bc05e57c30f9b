"""Where a restarted coordinator resumes: the newest checkpoint that verifies (RELIABILITY 25).

Before the state is opened, ``prepare_state_dir`` refuses a state dir whose ``state.sqlite``
or ``audit.sqlite`` is missing next to checkpoints of a run: starting over there would
silently begin a new run (or a new ledger). It also removes the ``*.tmp``
files a crash left behind. ``resume_run`` then checks each completed round's checkpoint,
newest first, against what ``state.sqlite`` recorded when it was written (file SHA-256,
weights SHA-256) and against the content digest in the file itself; round 0 (the initial
model) has only the latter. A missing, cut-off or changed file is named in a warning and
renamed ``*.damaged``; the run goes on from the newest good one: the later rounds are marked
discarded and their lines dropped from ``metrics.jsonl``, so they are run again. Rounds
recorded without a checkpoint (``checkpoint_every`` > 1) after the newest one are run again
the same way.

A run that spends a privacy budget is not rewound: its discarded rounds released noisy
aggregates, and running them again would spend the budget a second time while the
accountant restored from the older checkpoint counts it once (the accountant state of the
lost rounds is in the damaged file only). Such a run stops with an error that says so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from murmura.errors import CheckpointError, StateFileError
from murmura.node.checkpoint import SavedState, checkpoint_path, read_checkpoint, weights_sha256
from murmura.node.state import SavedRound, StateStore
from murmura.ops.audit import LEDGER_FILE
from murmura.ops.run_dir import keep_metrics
from murmura.storage import file_sha256, remove_orphan_temps
from murmura.types import Layout, Vector

log = logging.getLogger(__name__)
STATE_FILE = "state.sqlite"
DAMAGED = ".damaged"
"""Suffix a checkpoint that failed verification is renamed with (kept for inspection)."""


@dataclass(frozen=True, slots=True)
class Resumed:
    """The checkpoint a run resumes from, and the damaged ones that were set aside."""

    round: int
    checkpoint: Path
    weights: Vector
    state: SavedState | None
    damaged: list[Path] = field(default_factory=list)


def prepare_state_dir(state_dir: Path) -> None:
    """Refuse a state dir that lost its state files; remove temp files left by a crash."""
    ran = any(state_dir.glob("runs/*/checkpoints/*.safetensors"))
    for path in (state_dir / STATE_FILE, state_dir / LEDGER_FILE):
        if ran and not path.exists():
            raise StateFileError(
                f"{path} is missing, but {state_dir / 'runs'} holds checkpoints of a run: "
                f"restore it from a backup to resume the run, or move the state dir aside to "
                f"start a new run"
            )
    folders = [state_dir, *state_dir.glob("runs/*"), *state_dir.glob("runs/*/checkpoints")]
    for path in remove_orphan_temps(folders):
        log.warning("node=coordinator: removed %s, a temporary file left by a crash", path)


def verify_round(saved: SavedRound, layout: Layout) -> tuple[Vector, SavedState | None]:
    """A completed round's model and strategy state; ``CheckpointError`` if it fails a check."""
    assert saved.checkpoint is not None, "a round recorded without a checkpoint"
    path = Path(saved.checkpoint)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    weights, state = read_checkpoint(path, layout)  # says what is wrong with a cut-off file
    if saved.file_sha256 is not None and file_sha256(path) != saved.file_sha256:
        raise CheckpointError(
            f"{path}: its SHA-256 differs from the one recorded in {STATE_FILE} when it was "
            f"written (the file changed)"
        )
    if saved.model_sha256 is not None and weights_sha256(weights) != saved.model_sha256:
        raise CheckpointError(f"{path}: its weights differ from those recorded in {STATE_FILE}")
    return weights, state


def resume_run(store: StateStore, run_id: str, run_path: Path, layout: Layout) -> Resumed:
    """Resume ``run_id`` from its newest checkpoint that verifies (round 0 at the oldest).

    ``CheckpointError`` if none verifies, or if the run spends a privacy budget and the
    newest one does not (nothing is changed on disk then).
    """
    initial = SavedRound(0, str(checkpoint_path(run_path, 0)), None, None, {})
    saved_rounds = store.saved_rounds(run_id)
    pruned = _pruned(saved_rounds)
    if pruned:
        log.info("node=coordinator: %d older rounds were pruned by keep_last", len(pruned))
    bad: list[tuple[SavedRound, str]] = []
    kept = [s for s in saved_rounds if s.checkpoint is not None and s.round not in pruned]
    for saved in [*kept, initial]:
        try:
            weights, state = verify_round(saved, layout)
        except CheckpointError as exc:
            bad.append((saved, str(exc)))
            continue
        if bad:
            _refuse_if_budget_spent(bad, saved.round)
            _set_aside(bad, saved.round)
        newest = saved_rounds[0].round if saved_rounds else 0
        if newest > saved.round:  # damaged, or recorded without a checkpoint: run them again
            if not bad:
                log.info(
                    "node=coordinator: rounds %d-%d have no checkpoint (checkpoint_every); "
                    "running them again from round %d",
                    saved.round + 1, newest, saved.round,
                )  # fmt: skip
            store.discard_rounds(run_id, saved.round)
            keep_metrics(run_path / "metrics.jsonl", saved.round)
        damaged = [Path(str(b.checkpoint)) for b, _ in bad]
        return Resumed(saved.round, Path(str(saved.checkpoint)), weights, state, damaged)
    listing = "; ".join(why for _, why in bad)
    raise CheckpointError(
        f"no checkpoint of run {run_id} verifies ({listing}): restore them from a backup, "
        f"or move the state dir aside to start a new run"
    )


def _pruned(saved_rounds: list[SavedRound]) -> set[int]:
    """Rounds whose file is gone and older than every file left: ``keep_last`` removed them.

    They are skipped quietly (a fallback past them discards them anyway), so a run of 2,000
    rounds with every kept checkpoint damaged warns about the kept ones, not 2,000 files.
    """
    files = {s.round: Path(s.checkpoint) for s in saved_rounds if s.checkpoint is not None}
    present = [r for r, p in files.items() if r > 0 and p.exists()]
    if not present:
        return set()
    oldest = min(present)
    return {r for r, p in files.items() if 0 < r < oldest and not p.exists()}


def _refuse_if_budget_spent(bad: list[tuple[SavedRound, str]], good: int) -> None:
    spent = [b for b, _ in bad if "epsilon" in b.metrics]
    if not spent:
        return
    newest, why = bad[0]
    eps = spent[0].metrics["epsilon"]
    raise CheckpointError(
        f"{why}. This run spends a privacy budget (epsilon {eps} after round {spent[0].round}, "
        f"{STATE_FILE}): resuming from round {good} would run rounds {good + 1}-{newest.round} "
        f"again and spend their budget twice while reporting it once. Restore "
        f"{newest.checkpoint} from a backup, or move the state dir aside to start a new run"
    )


def _set_aside(bad: list[tuple[SavedRound, str]], good: int) -> None:
    """Rename the damaged files ``*.damaged`` and say so."""
    for saved, why in bad:
        assert saved.checkpoint is not None
        path = Path(saved.checkpoint)
        if path.exists():
            os.replace(path, path.with_name(path.name + DAMAGED))
            why += f"; renamed to {path.name}{DAMAGED}"
        log.warning(
            "node=coordinator round=%d: damaged checkpoint: %s; resuming from round %d",
            saved.round,
            why,
            good,
        )
