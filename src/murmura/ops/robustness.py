"""The robustness grid: every attack against every defence on one task.

A defence is a named set of config overrides (``Defence``): a plain aggregation rule, a
pre-aggregation in front of one (``[strategy] pre_aggregation``), or a backdoor defence; the
defaults keep those the running build accepts and the report lists the others. Each cell is
the base config with ``[attack] kind/fraction`` and the defence's overrides, run for the
config's rounds; the final central test accuracy (and, for a backdoor, the attack success
rate) goes into ``robustness.md`` (a table) and ``robustness.png`` (a heatmap), and every
cell's outcome into ``robustness.json`` as it finishes (a rerun skips the cells already there).
Cells run ``jobs`` processes at a time.
Each cell records its attackers' node ids; with ``[anomaly] enabled`` it also records, per
round, the attackers scored that round and the nodes flagged so far, and scores the final
flags against the attackers (precision, recall) in ``robustness.md``.
Rules that take ``f`` get ``f = round(fraction * cohort)``, trimmed mean ``beta = fraction``
(unless the defence sets ``aggregator_args``); other parameters are the rules', the
pre-aggregations' and the attacks' defaults, not tuned to this task or to any attack. The
``w:`` columns are the example-weighted forms (``weighted = true`` on the rule and on NNM).
The ``+fednova`` columns add FedNova's step normalisation (``[strategy] normalize_steps``).
A row ``attack@key=VALUE`` sets one attack parameter: min-max and min-sum run once per
perturbation of Shejwalkar and Houmansadr, who report the strongest of the three.
"""

from __future__ import annotations

import json
import logging
import math
import time
import tomllib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from murmura.config import Config, config_from_dict, load_config
from murmura.errors import ConfigError, MurmuraError
from murmura.types import RoundMetrics

log = logging.getLogger(__name__)

ATTACKS_DEFAULT = (
    "none",
    "sign_flip",
    "gaussian",
    "scaling",
    "label_flip",
    "alie",
    "ipm",
    "malformed",
    "min_max",
    "min_max@deviation=std",
    "min_max@deviation=sign",
    "min_sum",
    "min_sum@deviation=std",
    "min_sum@deviation=sign",
    "fang_trimmed_mean",
    "fang_krum",
    "mimic",
    "alie_opt",
    "ipm_opt",
    "backdoor",
    "model_replacement",
    "constrain_and_scale",
    "dba",
)
RULES_DEFAULT = (
    "weighted_mean",
    "coordinate_median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "bulyan",
    "geometric_median",
    "centered_clipping",
    "norm_bounding",
)
TAKES_F = frozenset({"krum", "multi_krum", "bulyan"})
PRE_AGGREGATIONS = ("nnm", "bucketing", "arc")
PRE_AGGREGATED_RULES = ("coordinate_median", "trimmed_mean", "krum", "geometric_median")
BACKDOOR_DEFENCES = ("flame", "foolsgold", "weak_dp")
"""Registered as aggregators where the build has them (FLAME, FoolsGold, norm clipping with
Gaussian noise); a build without them lists them as unavailable."""


@dataclass(frozen=True, slots=True)
class Defence:
    """A column of the grid: a name and the config overrides, per section, that make it."""

    name: str
    overrides: Mapping[str, Mapping[str, Any]]
    rule_args: Mapping[str, Any] = field(default_factory=dict)
    """Rule parameters added to the grid's own ``f`` / ``beta`` (e.g. ``weighted``)."""


def rule_defence(rule: str) -> Defence:
    """A plain aggregation rule as a defence."""
    return Defence(rule, {"strategy": {"aggregator": rule}})


def pre_aggregated(pre: str, rule: str) -> Defence:
    """``rule`` behind pre-aggregation ``pre`` (e.g. ``nnm+krum``)."""
    return Defence(f"{pre}+{rule}", {"strategy": {"pre_aggregation": pre, "aggregator": rule}})


WEIGHTED_RULES = ("coordinate_median", "trimmed_mean")
"""Rules with an example-weighted form (``weighted = true``); geometric median always is."""


def weighted(rule: str, nnm: bool = False) -> Defence:
    """``rule`` in its example-weighted form, behind weight-share NNM if ``nnm``.

    Named ``w:<rule>`` / ``w:nnm+<rule>``: under quantity skew the unweighted rules count a
    client with 3 examples like one with 100 (``murmura.aggregate.weighted_order``).
    """
    strategy: dict[str, Any] = {"aggregator": rule}
    if nnm:
        strategy |= {"pre_aggregation": "nnm", "pre_aggregation_args": {"weighted": True}}
    args = {"weighted": True} if rule in WEIGHTED_RULES else {}
    return Defence(f"w:{'nnm+' if nnm else ''}{rule}", {"strategy": strategy}, args)


def fednova(d: Defence) -> Defence:
    """``d`` with FedNova's step normalisation (``[strategy] normalize_steps``), ``<d>+fednova``."""
    strategy = {**d.overrides.get("strategy", {}), "normalize_steps": True}
    return Defence(f"{d.name}+fednova", {**d.overrides, "strategy": strategy}, d.rule_args)


def server_step(d: Defence, lr: float) -> Defence:
    """``d`` with the server learning rate ``lr`` (FedOpt, Reddi et al. 2021), ``<d>@server_lr=lr``.

    A robust rule over heterogeneous updates moves the model less than their mean does (the
    median of updates that disagree cancels), so the server's step makes up the length; chosen
    once, without attack, never per attack.
    """
    strategy = {**d.overrides.get("strategy", {}), "server_lr": lr}
    return Defence(f"{d.name}@server_lr={lr:g}", {**d.overrides, "strategy": strategy}, d.rule_args)


FEDNOVA_BASES = (
    "weighted_mean",
    *(f"nnm+{r}" for r in PRE_AGGREGATED_RULES),
    *(f"w:nnm+{r}" for r in (*WEIGHTED_RULES, "geometric_median")),
)
"""The defences also run with step normalisation: the mean, and NNM before each rule."""
SERVER_STEP_BASES = (
    "weighted_mean",
    "nnm+trimmed_mean+fednova",
    "nnm+geometric_median+fednova",
)
"""The defences also run at server learning rate 1.5: the mean (the fair reference for what the
longer step alone gives) and the two NNM + rule rows with step normalisation."""


DEFENCES: dict[str, Defence] = {
    d.name: d
    for d in (
        *(rule_defence(r) for r in RULES_DEFAULT),
        *(pre_aggregated(p, r) for p in PRE_AGGREGATIONS for r in PRE_AGGREGATED_RULES),
        *(weighted(r) for r in WEIGHTED_RULES),
        *(weighted(r, nnm=True) for r in (*WEIGHTED_RULES, "geometric_median")),
        *(rule_defence(r) for r in BACKDOOR_DEFENCES),
    )
}
DEFENCES |= {d.name: d for d in (fednova(DEFENCES[b]) for b in FEDNOVA_BASES)}
DEFENCES |= {d.name: d for d in (server_step(DEFENCES[b], 1.5) for b in SERVER_STEP_BASES)}
"""Every named defence; ``--defences`` picks among them, ``--defence`` adds others."""


@dataclass(frozen=True, slots=True)
class Cell:
    """The outcome of one (attack, rule) run."""

    attack: str
    rule: str
    accuracy: float | None
    seconds: float
    failures: int = 0
    error: str | None = None
    attackers: tuple[str, ...] = ()
    """Node ids of the Byzantine clients (the same every round)."""
    flags: FlagScore | None = None
    """The anomaly monitor's final flags scored against ``attackers``; None: monitor off."""
    rounds: tuple[RoundFlags, ...] = ()
    """Per round, with the anomaly monitor on: attackers scored, nodes flagged so far."""
    asr: float | None = None
    """A backdoor's attack success rate on the triggered test set at the end; else None."""


@dataclass(frozen=True, slots=True)
class FlagScore:
    """Flagged nodes against the attackers: precision over flagged, recall over attackers seen."""

    flagged: tuple[str, ...]
    true_positives: int
    attackers_seen: int
    """Attackers that took part in at least one round (an unsampled one cannot be flagged)."""
    precision: float | None
    """True positives over flagged; None when nothing was flagged."""
    recall: float | None
    """True positives over attackers seen; None when no attacker took part."""


@dataclass(frozen=True, slots=True)
class RoundFlags:
    """One round: the attackers among the nodes scored, and every node flagged so far."""

    round: int
    attackers: tuple[str, ...]
    flagged: tuple[str, ...]


def score_flags(
    attackers: Collection[str], history: Sequence[RoundMetrics]
) -> tuple[FlagScore | None, tuple[RoundFlags, ...]]:
    """Score the anomaly flags of ``history`` against ``attackers`` (None if never monitored)."""
    bad = set(attackers)
    seen: set[str] = set()
    flagged: set[str] = set()
    rounds = []
    for m in history:
        if "flagged" not in m.extra:
            continue
        scored = m.extra.get("anomaly")
        nodes = set(scored) if isinstance(scored, Mapping) else set()
        raw = m.extra["flagged"]
        flagged = {str(n) for n in raw} if isinstance(raw, list | tuple | set) else set()
        seen |= nodes & bad
        rounds.append(RoundFlags(m.round, tuple(sorted(nodes & bad)), tuple(sorted(flagged))))
    if not rounds:
        return None, ()
    hits = len(flagged & bad)
    seen |= flagged & bad
    score = FlagScore(
        tuple(sorted(flagged)),
        hits,
        len(seen),
        hits / len(flagged) if flagged else None,
        hits / len(seen) if seen else None,
    )
    return score, tuple(rounds)


def attack_spec(attack: str) -> tuple[str, dict[str, Any]]:
    """A grid row's attack and its one parameter: ``min_max@deviation=std``.

    The value is TOML, or a bare word taken as a string; no ``@``: the attack's defaults.
    """
    kind, at, arg = attack.partition("@")
    if not at:
        return attack, {}
    key, eq, raw = arg.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"attack {attack!r}: expected NAME@key=VALUE, e.g. min_max@deviation=std")
    try:
        value: Any = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return kind.strip(), {key.strip(): value}


def rule_args(rule: str, fraction: float, cohort: int) -> dict[str, Any]:
    """The rule's parameters for ``fraction`` attackers among ``cohort`` participants."""
    if rule in TAKES_F:
        return {"f": math.floor(fraction * cohort + 0.5)}
    if rule == "trimmed_mean":
        return {"beta": fraction}
    return {}


def attacker_presence(num_clients: int, cohort: int, fraction: float) -> str:
    """How the grid's attackers sit in each round, for the report's header.

    The papers' attacks assume every attacker takes part in every round; a cohort sampled
    from the clients holds a varying number of them (on average ``fraction`` of it).
    """
    k = math.floor(fraction * num_clients + 0.5)
    if cohort >= num_clients:
        return f"all {num_clients} clients every round, so {k} attackers in every round"
    mean = k * cohort / num_clients
    return (
        f"{cohort} of {num_clients} clients sampled per round: a round holds a varying "
        f"number of the {k} attackers, {mean:.1f} on average"
    )


def cell_config(
    base: Mapping[str, Any], attack: str, defence: str | Defence, fraction: float
) -> Config:
    """The base config with this cell's attack and defence (a rule name: that rule alone)."""
    d = rule_defence(defence) if isinstance(defence, str) else defence
    cohort = config_from_dict(dict(base)).cohort_size()
    data = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for section, keys in d.overrides.items():
        data[section] = {**data.get(section, {}), **keys}
    kind, args = attack_spec(attack)
    data["attack"] = {"kind": kind, "fraction": fraction if kind != "none" else 0.0, "args": args}
    strategy = data.setdefault("strategy", {})
    if "aggregator_args" not in d.overrides.get("strategy", {}):
        rule = str(strategy.get("aggregator", "weighted_mean"))
        strategy["aggregator_args"] = {**rule_args(rule, fraction, cohort), **d.rule_args}
    return config_from_dict(data, f"robustness cell {attack} x {d.name}")


def available(
    base: Mapping[str, Any], defences: Sequence[Defence]
) -> tuple[list[Defence], dict[str, str]]:
    """The defences this build accepts on ``base``, and why each other one is left out."""
    ok, missing = [], {}
    for d in defences:
        try:
            cell_config(base, "none", d, 0.0)
        except MurmuraError as exc:
            missing[d.name] = str(exc)
            continue
        ok.append(d)
    return ok, missing


def run_cell(base: Mapping[str, Any], attack: str, defence: str | Defence, fraction: float) -> Cell:
    """Run one cell in this process (one torch thread); errors become the cell's outcome."""
    import torch

    from murmura.sim.builder import build_experiment

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rule = defence if isinstance(defence, str) else defence.name
    try:
        cfg = cell_config(base, attack, defence, fraction)
        exp = build_experiment(cfg)
        history = exp.simulation.run(cfg.run.rounds)
    except Exception as exc:  # noqa: BLE001 - a failing cell is a result, not a crash
        expected = isinstance(exc, MurmuraError)  # a cell the config refuses: no traceback
        log.warning("cell %s x %s failed: %s", attack, rule, exc, exc_info=not expected)
        return Cell(attack, rule, None, time.perf_counter() - t0, error=f"{exc}")
    last = history.rounds[-1]
    failures = sum(len(m.failures) for m in history.rounds)
    flags, rounds = score_flags(exp.byzantine, history.rounds)
    seconds = time.perf_counter() - t0
    asr = last.extra.get("attack_success_rate")
    return Cell(
        attack,
        rule,
        last.test_accuracy,
        seconds,
        failures,
        None,
        exp.byzantine,
        flags,
        rounds,
        float(asr) if isinstance(asr, int | float) else None,
    )


def run_grid(
    base: Mapping[str, Any],
    attacks: Sequence[str],
    rules: Sequence[str | Defence],
    fraction: float,
    jobs: int = 1,
    done: Mapping[tuple[str, str], Cell] | None = None,
) -> Iterator[Cell]:
    """Yield each cell's outcome as it finishes, ``jobs`` processes at a time."""
    named = [rule_defence(r) if isinstance(r, str) else r for r in rules]
    todo = [(a, r) for a in attacks for r in named if (a, r.name) not in (done or {})]
    if jobs <= 1:
        for a, r in todo:
            yield run_cell(base, a, r, fraction)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_cell, dict(base), a, r, fraction) for a, r in todo]
        for fut in as_completed(futures):
            yield fut.result()


def load_cells(path: Path) -> dict[tuple[str, str], Cell]:
    """Cells already recorded in ``robustness.json`` (none if it does not exist)."""
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())
    return {(c["attack"], c["rule"]): cell_from_json(c) for c in rows}


def cell_from_json(row: Mapping[str, Any]) -> Cell:
    """A ``Cell`` from its ``robustness.json`` form (older files lack the attacker fields)."""
    data = dict(row)
    data["attackers"] = tuple(data.get("attackers", ()))
    flags = data.get("flags")
    if flags is not None:
        data["flags"] = FlagScore(**{**flags, "flagged": tuple(flags["flagged"])})
    data["rounds"] = tuple(
        RoundFlags(r["round"], tuple(r["attackers"]), tuple(r["flagged"]))
        for r in data.get("rounds", ())
    )
    return Cell(**data)


def save_cells(path: Path, cells: Mapping[tuple[str, str], Cell]) -> None:
    """Write every cell as JSON (atomically: temp file, then rename)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps([asdict(c) for c in cells.values()], indent=1) + "\n")
    tmp.replace(path)


def markdown_table(
    cells: Mapping[tuple[str, str], Cell], attacks: Sequence[str], rules: Sequence[str]
) -> str:
    """Final accuracy per attack (rows) and defence (columns), ``acc / ASR`` for a backdoor."""
    head = "| attack \\ defence | " + " | ".join(rules) + " |"
    lines = [head, "|---|" + "---|" * len(rules)]
    for a in attacks:
        vals = [cell_text(cells.get((a, r))) for r in rules]
        lines.append(f"| {a} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def cell_text(c: Cell | None) -> str:
    """A cell as the table shows it: accuracy, ``/ ASR`` for a backdoor, ``err``, or blank."""
    if c is None:
        return ""
    if c.accuracy is None:
        return "err"
    return f"{c.accuracy:.3f}" + ("" if c.asr is None else f" / {c.asr:.2f}")


def flag_text(score: FlagScore | None) -> str:
    """``precision / recall`` of a cell's flags, ``-`` for an undefined one; empty if none."""
    if score is None:
        return ""

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    return f"{fmt(score.precision)} / {fmt(score.recall)}"


def flags_table(
    cells: Mapping[tuple[str, str], Cell], attacks: Sequence[str], rules: Sequence[str]
) -> str:
    """Anomaly-flag precision / recall per attack (rows) and rule (columns)."""
    lines = ["| attack \\ rule | " + " | ".join(rules) + " |", "|---|" + "---|" * len(rules)]
    for a in attacks:
        vals = [flag_text(c.flags) if (c := cells.get((a, r))) else "" for r in rules]
        lines.append(f"| {a} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def write_report(
    out: Path,
    cells: Mapping[tuple[str, str], Cell],
    attacks: Sequence[str],
    rules: Sequence[str],
    header: str,
    missing: Mapping[str, str] | None = None,
) -> None:
    """``robustness.md`` (table, notes on failed cells) and ``robustness.png`` (heatmap).

    ``missing``: defences this build does not accept, and why (listed, not run).
    """
    errors = [f"- {c.attack} x {c.rule}: {c.error}" for c in cells.values() if c.error]
    body = [header, "", markdown_table(cells, attacks, rules), ""]
    if any(c.asr is not None for c in cells.values()):
        body += [
            "`acc / ASR`: main-task accuracy / attack success rate, the share of triggered "
            "test images (true label not the target) classified as the target.",
            "",
        ]
    if missing:
        body += ["Defences not in this build (not run):", ""]
        body += [f"- {name}: {why}" for name, why in missing.items()] + [""]
    if any(c.flags is not None for c in cells.values()):
        body += [
            "Anomaly flags at the end of the run against the attackers: precision / recall "
            "(flagged attackers / flagged, flagged attackers / attackers that took part; "
            "`-`: nothing flagged, or no attacker).",
            "",
            flags_table(cells, attacks, rules),
            "",
        ]
    if errors:
        body += ["Cells that could not run:", "", *errors, ""]
    (out / "robustness.md").write_text("\n".join(body))
    heatmap(out / "robustness.png", cells, attacks, rules)


def heatmap(
    path: Path, cells: Mapping[tuple[str, str], Cell], attacks: Sequence[str], rules: Sequence[str]
) -> None:
    """Final accuracy as a colour grid, the value printed in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.full((len(attacks), len(rules)), np.nan)
    for i, a in enumerate(attacks):
        for j, r in enumerate(rules):
            c = cells.get((a, r))
            if c is not None and c.accuracy is not None:
                grid[i, j] = c.accuracy
    fig, ax = plt.subplots(figsize=(1.1 * len(rules) + 2, 0.6 * len(attacks) + 1.5))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(rules)), rules, rotation=35, ha="right")
    ax.set_yticks(range(len(attacks)), attacks)
    for (i, j), v in np.ndenumerate(grid):
        c = cells.get((attacks[i], rules[j]))
        text = "err" if np.isnan(v) else f"{v:.2f}"
        if c is not None and c.asr is not None:
            text += f"\nASR {c.asr:.2f}"
        ax.text(j, i, text, ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=8)
    fig.colorbar(im, ax=ax, label="final test accuracy")
    ax.set_title("robustness: attacks x defences")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def robustness(
    config_path: Path,
    out: Path,
    attacks: Sequence[str] = ATTACKS_DEFAULT,
    rules: Sequence[str | Defence] | None = None,
    fraction: float = 0.2,
    jobs: int = 1,
    on_cell: Callable[[Cell], None] | None = None,
    rounds: int | None = None,
) -> dict[tuple[str, str], Cell]:
    """Run (or finish) the grid for ``config_path`` and write its outputs under ``out``.

    ``rules`` None: every ``DEFENCES`` entry this build accepts. ``rounds`` overrides the
    config's (a reduced grid says so in its header).
    """
    base = load_config(config_path).model_dump()
    if rounds is not None:
        base["run"]["rounds"] = rounds
    wanted = list(DEFENCES.values()) if rules is None else rules
    defences, missing = available(
        base, [rule_defence(r) if isinstance(r, str) else r for r in wanted]
    )
    out.mkdir(parents=True, exist_ok=True)
    store = out / "robustness.json"
    cells = load_cells(store)
    for cell in run_grid(base, attacks, defences, fraction, jobs, cells):
        cells[(cell.attack, cell.rule)] = cell
        save_cells(store, cells)
        if on_cell is not None:
            on_cell(cell)
    cfg = config_from_dict(base)
    presence = attacker_presence(cfg.partition.num_clients, cfg.cohort_size(), fraction)
    header = (
        f"# Robustness: {config_path.name}, {round(fraction * 100)}% Byzantine clients, "
        f"{base['run']['rounds']} rounds, final test accuracy (/ attack success rate)\n\n"
        f"Cohort: {presence}."
    )
    names = [d.name for d in defences]
    write_report(out, cells, attacks, names, header, missing)
    return cells
