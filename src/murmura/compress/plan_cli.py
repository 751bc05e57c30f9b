"""``murmura plan bandwidth CONFIG``: bytes and wire time per round and per run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from murmura.compress.plan import Links, RoundPlan, p2p, parse_duration, parse_rate, star, tree
from murmura.errors import MurmuraError

plan_app = typer.Typer(no_args_is_help=True, help="Plan a run's resources before running it.")
console = Console()


def model_size(cfg: object) -> int:
    """Parameters of the model that ``cfg``'s task builds."""
    from murmura.tasks import load_task

    task = load_task(cfg.task.name, **cfg.task.args)  # type: ignore[attr-defined]
    return sum(p.numel() for p in task.build_model().parameters())


def plans(cfg: object, d: int, links: Links) -> list[tuple[str, RoundPlan]]:
    """(label, plan) for float32 and, when configured, the codecs.

    A compressed downlink's figures are those of the rounds after a client's first (which
    gets the float32 model).
    """
    from murmura.compress import framed_size
    from murmura.compress.downlink import downlink_codec
    from murmura.compress.uplink import uplink_codec
    from murmura.config import Config

    assert isinstance(cfg, Config)
    codec, back = uplink_codec(cfg), downlink_codec(cfg)
    ups = [("float32", 4 * d, 4 * d)]
    if cfg.secagg.enabled:
        ups = _secure_ups(cfg, d, 4 * d if back is None else framed_size(back, d))
    elif codec is not None or back is not None:
        c = cfg.compression
        label = " / ".join(
            f"{side} {name}" for side, name in (("up", c.uplink), ("down", c.downlink))
            if name != "none"
        )  # fmt: skip
        up = 4 * d if codec is None else framed_size(codec, d)
        ups.append((label, up, 4 * d if back is None else framed_size(back, d)))
    kind = cfg.topology.kind
    if kind == "star":
        return [(n, star(d, cfg.cohort_size(), up, links, down)) for n, up, down in ups]
    if kind == "tree":
        clients, edges = cfg.partition.num_clients, cfg.topology.edges
        return [(n, tree(d, clients, edges, up, links, down)) for n, up, down in ups]
    from murmura.compose.peer import topology_graph

    graph = topology_graph(cfg.topology, cfg.partition.num_clients)
    n = graph.number_of_nodes()
    degree = 2 * graph.number_of_edges() / max(n, 1)
    return [(name, p2p(up, n, degree, links)) for name, up, _ in ups]


def _secure_ups(cfg: object, d: int, down: int) -> list[tuple[str, int, int]]:
    """Uplinks under [secagg]: the update travels as its masked input.

    4 bytes a word mod 2^32, 2 with 8-bit levels mod 2^16; the key exchange's messages
    (O(neighbours) each) are not counted.
    """
    from murmura.config import Config
    from murmura.privacy.secagg.messages import masked_input_size

    assert isinstance(cfg, Config)
    ups = [("secagg", masked_input_size(d + 1, 4), down)]
    if cfg.compression.uplink == "quantize":
        ups.append(("secagg + 8-bit levels", masked_input_size(d + 1, 2), down))
    return ups


def human(nbytes: float) -> str:
    """Bytes with a decimal unit: ``19.24 kB``."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= size:
            return f"{nbytes / size:,.2f} {unit}"
    return f"{nbytes:,.0f} B"


def table_of(title: str, rounds: int, rows: list[tuple[str, RoundPlan]]) -> Table:
    """One column per uplink, one row per figure."""
    role = rows[0][1].role
    node = "peer" if role == "each peer" else "client"
    table = Table(title=title)
    table.add_column("per round")
    for label, _ in rows:
        table.add_column(label, justify="right")
    figures: list[tuple[str, Callable[[RoundPlan], str]]] = [
        (f"{node} up", lambda p: human(p.node_up)),
        (f"{node} down", lambda p: human(p.node_down)),
        (f"{role} in", lambda p: human(p.hub_up)),
        (f"{role} out", lambda p: human(p.hub_down)),
        ("all links", lambda p: human(p.total)),
        ("wire time", lambda p: f"{p.seconds:.2f} s"),
        (f"whole run ({rounds} rounds): all links", lambda p: human(rounds * p.total)),
        (f"whole run ({rounds} rounds): wire time", lambda p: f"{rounds * p.seconds:.1f} s"),
    ]
    for name, show in figures:
        table.add_row(name, *(show(p) for _, p in rows))
    return table


@plan_app.command("bandwidth")
def bandwidth(
    config: Annotated[Path, typer.Argument(help="Run config (TOML).")],
    uplink: Annotated[str, typer.Option("--uplink", help="Each node's uplink, e.g. 10Mbit.")],
    downlink: Annotated[str, typer.Option("--downlink", help="Each node's downlink.")],
    latency: Annotated[str, typer.Option("--latency", help="One-way latency, e.g. 50ms.")] = "0ms",
) -> None:
    """Bytes per node and at the coordinator (edge, peer), and wire time, per round and run."""
    from murmura.config import load_config

    try:
        links = Links(parse_rate(uplink), parse_rate(downlink), parse_duration(latency))
        cfg = load_config(config)
        d = model_size(cfg)
        rows = plans(cfg, d, links)
    except (MurmuraError, ValueError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    title = (
        f"{cfg.topology.kind}, {d:,} parameters; links up {uplink}, down {downlink}, "
        f"latency {latency}"
    )
    console.print(table_of(escape(title), cfg.run.rounds, rows))
