"""``murmura server`` and ``murmura client``: the deployed coordinator and worker."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from murmura.errors import MurmuraError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
log = logging.getLogger(__name__)


def _fail(exc: Exception) -> typer.Exit:
    # escaped: "[server]" in a message is text, not markup; one line, whatever the width
    console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(2)


@app.command("server")
def server(
    config: Annotated[Path, typer.Argument(help="Run config with a \\[server] table.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: --set server.port=6000.")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="No TLS (loopback only; for local tests).")
    ] = False,
    new_run: Annotated[
        bool,
        typer.Option("--new-run", help="Start a new run even if an unfinished one exists."),
    ] = False,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="Resume this unfinished run of the state dir."),
    ] = None,
) -> None:
    """Run a coordinator: serve workers over gRPC and train CONFIG's run; resume if interrupted."""
    from murmura.node.deploy import build_coordinator, split_config

    if new_run and run_id is not None:
        raise _fail(MurmuraError("--new-run and --run-id exclude each other: choose one"))
    try:
        cfg, section = split_config(config, set_)
        coordinator = build_coordinator(cfg, section, insecure, new_run, run_id)
        result = asyncio.run(coordinator.run())
    except MurmuraError as exc:
        raise _fail(exc) from None
    last = result.rounds[-1] if result.rounds else None
    acc = last.test_accuracy if last is not None else None
    console.print(
        f"run {result.run_id}: {len(result.rounds)} rounds in this process, "
        f"final test accuracy {'-' if acc is None else format(acc, '.4f')}"
    )
    summary = result.summary
    if "final_federated_accuracy" in summary:
        fed, n = summary["final_federated_accuracy"], summary["final_federated_clients"]
        shown = format(fed, ".4f") if isinstance(fed, float) else "-"
        console.print(f"final federated accuracy {shown} ({n} clients, summary.json)")
    if "epsilon" in result.summary:
        eps, delta = result.summary["epsilon"], result.summary.get("delta")
        console.print(f"privacy: epsilon {eps} at delta {delta} (summary.json)")


@app.command("client")
def client(
    server_address: Annotated[str, typer.Option("--server", help="Coordinator HOST:PORT.")],
    partition: Annotated[
        str | None, typer.Option("--partition", help="This node's data: i/n of the task's.")
    ] = None,
    site: Annotated[
        Path | None,
        typer.Option("--site", help="Site config: this site's own data (instead of --partition)."),
    ] = None,
    cert: Annotated[Path | None, typer.Option("--cert", help="Node certificate (PEM).")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="Node private key (PEM).")] = None,
    ca: Annotated[Path | None, typer.Option("--ca", help="Project CA certificate (PEM).")] = None,
    task: Annotated[str, typer.Option("--task", help="Task name.")] = "digits",
    config: Annotated[
        Path | None, typer.Option("--config", help="Read task, partition and seed from a config.")
    ] = None,
    partitioner: Annotated[
        str | None,
        typer.Option(
            "--partitioner",
            help="How the data is split into the n partitions: iid, dirichlet, shards or "
            "quantity (default: the task's); the same on every worker.",
        ),
    ] = None,
    seed: Annotated[
        int,
        typer.Option("--seed", help="Seed of the split and of training; the same on every worker."),
    ] = 0,
    eval_fraction: Annotated[
        float | None,
        typer.Option(
            "--eval-fraction",
            min=0.0,
            max=0.99,
            help="Hold out this share of the partition for federated evaluation "
            "(with --config: \\[evaluation] local_fraction when federated = true).",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Node id in --insecure mode (else from --cert).")
    ] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="No TLS (loopback only).")] = False,
    max_epochs: Annotated[
        int, typer.Option("--max-epochs", min=1, help="Refuse rounds asking for more epochs.")
    ] = 1000,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", min=1, help="Refuse larger batch sizes.")
    ] = 1_000_000,
    max_lr: Annotated[float, typer.Option("--max-lr", help="Refuse a larger lr (> 0).")] = 10.0,
) -> None:
    """Run a worker: train on its site's own data (--site) or partition i/n when asked."""
    from murmura.node.deploy import client_from_config, local_client, split_config
    from murmura.node.instructions import InstructionLimits
    from murmura.node.worker import Worker
    from murmura.transport import keys
    from murmura.transport.grpc_client import CoordinatorLink

    try:
        limits = InstructionLimits(max_epochs, max_batch_size, max_lr)
        if (partition is None) == (site is None):
            raise typer.BadParameter("give --partition i/n or --site SITE.toml (one of them)")
        if insecure:
            default = f"worker-{partition.replace('/', 'of')}" if partition else None
            if name is None and default is None:
                raise typer.BadParameter("--site with --insecure needs --name (the node id)")
            creds, node = None, str(name or default)
        elif cert and key and ca:
            creds = keys.Credentials.load(cert, key, ca)
            node = creds.name
        else:
            raise typer.BadParameter("--cert, --key and --ca are required (or --insecure)")
        if site is not None:
            from murmura.node.site import load_site_config, site_client

            if config is None:
                raise typer.BadParameter("--site needs --config JOB.toml (the job's schema)")
            local = site_client(load_site_config(site), split_config(config)[0], node)
        elif config is not None and partition is not None:
            local = client_from_config(split_config(config)[0], partition)
        else:
            assert partition is not None
            held = eval_fraction or None  # 0: nothing held out
            local = local_client(task, partition, partitioner, seed, local_fraction=held)
        link = CoordinatorLink(server_address, node, creds)
        stats = Worker(link, local, limits=limits).run()
    except MurmuraError as exc:
        raise _fail(exc) from None
    console.print(f"{node}: {stats.rounds} rounds trained, stopped: {escape(stats.reason)}")
    if stats.reason.startswith("refused"):
        raise typer.Exit(3)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    app()
