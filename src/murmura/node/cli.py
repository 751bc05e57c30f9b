"""``murmura server`` and ``murmura client``: the deployed coordinator and worker."""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from murmura.errors import MurmuraError

if TYPE_CHECKING:
    from murmura.federation.site_loop import StandingSite
    from murmura.node.coordinator import CoordinatorResult
    from murmura.node.instructions import InstructionLimits
    from murmura.node.worker import Worker
    from murmura.transport import keys

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
log = logging.getLogger(__name__)


class LogFormat(StrEnum):
    """How a long-running command prints its lines (``murmura.console``)."""

    text = "text"
    json = "json"


LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        help="text: lines for a terminal; json: one JSON object per line (time, level, node, "
        "run, round, event, fields) for log pipelines.",
    ),
]


def use_log_format(log_format: LogFormat) -> None:
    """Print this command's lines and warnings in ``log_format``."""
    from murmura import console as out

    out.setup(log_format.value, stream=console)


def fail(exc: Exception, node: str = "murmura") -> typer.Exit:
    """One ``error:`` line (a JSON ``error`` event with ``--log-format json``); exit status 2."""
    root = logging.getLogger().handlers
    if any(getattr(h, "log_format", "text") == "json" for h in root):
        from murmura.console import say

        say(log, "error", str(exc), node=node, level=logging.ERROR)
        return typer.Exit(2)
    # escaped: "[server]" in a message is text, not markup; one line, whatever the width
    console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(2)


@app.command("server")
def server(
    config: Annotated[
        Path, typer.Argument(help="Run config with a \\[server] table (or a federation config).")
    ],
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
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Run a coordinator: serve workers over gRPC and train CONFIG's run; resume if interrupted.

    A federation config (a federation table, no run) runs a standing federation instead: a
    queue of jobs that admins manage with `murmura job`, run on the standing sites.

    Ctrl-C (or SIGTERM) abandons the round in progress and exits 0; the same command resumes
    after the last completed round.
    """
    from murmura.node import progress
    from murmura.node.coordinator import Coordinator
    from murmura.node.deploy import build_coordinator, split_config
    from murmura.node.shutdown import Interrupted, leave, raising_signals, until_signalled

    use_log_format(log_format)
    if new_run and run_id is not None:
        raise fail(MurmuraError("--new-run and --run-id exclude each other: choose one"))
    from murmura.federation.config import is_federation_config

    if is_federation_config(config):  # a standing federation: a queue of jobs
        _federation(config, set_, new_run, run_id, insecure)
        return
    coordinator: Coordinator | None = None
    try:
        with raising_signals():
            cfg, section = split_config(config, set_)
            coordinator = build_coordinator(cfg, section, insecure, new_run, run_id)
            result = asyncio.run(until_signalled(coordinator.run()))
    except MurmuraError as exc:
        raise fail(exc, "coordinator") from None
    except Interrupted as exc:
        done = coordinator.round_done if coordinator is not None else 0
        run = coordinator.run_id if coordinator is not None else None
        progress.interrupted("coordinator", run, done, exc.signame)
        leave(0)
    _server_summary(result)


def _federation(
    config: Path, set_: list[str] | None, new_run: bool, run_id: str | None, insecure: bool
) -> None:
    """``murmura server federation.toml``: the job queue (``murmura.federation``)."""
    from murmura.federation.server import run_federation

    given = {"--set": set_, "--new-run": new_run or None, "--run-id": run_id}
    if any(v is not None for v in given.values()):
        flags = ", ".join(k for k, v in given.items() if v is not None)
        raise fail(MurmuraError(f"{flags}: a federation config takes none (a job is a run)"))
    try:
        run_federation(config, insecure)
    except MurmuraError as exc:
        raise fail(exc, "federation") from None


def _server_summary(result: CoordinatorResult) -> None:
    """The coordinator's last lines: rounds, final accuracy (central, federated), epsilon."""
    from murmura.node import progress

    last = result.rounds[-1] if result.rounds else None
    acc = last.test_accuracy if last is not None else None
    end = int(result.summary.get("rounds", 0) or 0)  # type: ignore[call-overload]
    progress.finished(
        "coordinator",
        result.run_id,
        f"run {result.run_id}: {len(result.rounds)} rounds in this process, "
        f"final test accuracy {'-' if acc is None else format(acc, '.4f')}",
        end,
        rounds=len(result.rounds),
        test_accuracy=acc,
    )
    summary = result.summary
    if "final_federated_accuracy" in summary:
        fed, n = summary["final_federated_accuracy"], summary["final_federated_clients"]
        shown = format(fed, ".4f") if isinstance(fed, float) else "-"
        text = f"final federated accuracy {shown} ({n} clients, summary.json)"
        progress.finished("coordinator", result.run_id, text, end)
    if "epsilon" in summary:
        eps, delta = summary["epsilon"], summary.get("delta")
        progress.privacy_spent("coordinator", result.run_id, eps, delta)


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
    task: Annotated[
        str | None, typer.Option("--task", help="Task name (default digits; not with --config).")
    ] = None,
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
        int | None,
        typer.Option(
            "--seed", help="Seed of the split and of training (default 0); same on every worker."
        ),
    ] = None,
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
    standing: Annotated[
        bool,
        typer.Option(
            "--standing",
            help="Wait for a federation's jobs and stay up (implied by --site without --config).",
        ),
    ] = False,
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Run a worker: train on its site's own data (--site) or partition i/n when asked.

    With --site and no --config (or with --standing) it is a standing site: it waits for the
    federation's jobs, checks each against its policy, runs the ones it accepts and stays up.

    Ctrl-C (or SIGTERM) abandons the round in progress and exits 0; the coordinator counts
    this worker as lost, and the same command rejoins the run.
    """
    from murmura.node import progress
    from murmura.node.instructions import InstructionLimits
    from murmura.node.shutdown import Interrupted, leave, raising_signals

    use_log_format(log_format)
    if standing or (site is not None and config is None):
        _standing(server_address, partition, site, cert, key, ca, name, insecure,
                  InstructionLimits(max_epochs, max_batch_size, max_lr), task, config)  # fmt: skip
        return
    worker: Worker | None = None
    node = name or "worker"
    try:
        with raising_signals():
            limits = InstructionLimits(max_epochs, max_batch_size, max_lr)
            worker = _worker(
                server_address, partition, site, cert, key, ca, task, config, partitioner,
                seed, eval_fraction, name, insecure, limits,
            )  # fmt: skip
            node = worker.node
            stats = worker.run()
            worker.close()  # no gRPC channel or heartbeat thread left for interpreter teardown
    except MurmuraError as exc:
        raise fail(exc, node) from None
    except Interrupted as exc:
        done = 0
        if worker is not None:
            worker.close()
            done = worker.after_round
        progress.interrupted(node, worker.link.run_id if worker else None, done, exc.signame)
        leave(0)
    text = f"{stats.rounds} rounds trained, stopped: {stats.reason}"
    progress.finished(node, worker.link.run_id, text, stats.last_round, reason=stats.reason)
    if stats.reason.startswith("refused"):
        raise typer.Exit(3)


def _standing(
    server_address: str,
    partition: str | None,
    site: Path | None,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    name: str | None,
    insecure: bool,
    limits: InstructionLimits,
    task: str | None,
    config: Path | None,
) -> None:
    """A standing site (``murmura.federation.site_loop``): until Ctrl-C, then exit 0."""
    from murmura.federation.standing import standing_site
    from murmura.federation.standing_cli import run_standing

    if (partition is None) == (site is None):
        raise typer.BadParameter("give --partition i/n or --site SITE.toml (one of them)")
    if task is not None or config is not None:
        raise typer.BadParameter("--task, --config: a standing site takes its jobs' configs")

    def build(node: str, creds: keys.Credentials | None) -> StandingSite:
        return standing_site(server_address, node, creds, site, partition, limits)

    flag = "--site" if site is not None else "--standing"
    run_standing(build, (cert, key, ca), name, insecure, flag, "site", fail)


def _worker(
    server_address: str,
    partition: str | None,
    site: Path | None,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    task: str | None,
    config: Path | None,
    partitioner: str | None,
    seed: int | None,
    eval_fraction: float | None,
    name: str | None,
    insecure: bool,
    limits: InstructionLimits,
) -> Worker:
    """The worker of ``murmura client``'s options: its identity, link and local data."""
    from murmura.compress.uplink import make_uplink
    from murmura.node.deploy import client_from_config, local_client, split_config
    from murmura.node.downlink import held_model
    from murmura.node.worker import Worker
    from murmura.transport import keys
    from murmura.transport.registry import DEFAULT, transport

    if (partition is None) == (site is None):
        raise typer.BadParameter("give --partition i/n or --site SITE.toml (one of them)")
    given: dict[str, object] = {"--task": task, "--partitioner": partitioner, "--seed": seed}
    given["--eval-fraction"] = eval_fraction
    ignored = [flag for flag, value in given.items() if value is not None]
    if config is not None and ignored:
        raise typer.BadParameter(
            f"{', '.join(ignored)}: the job config decides these; drop them with --config"
        )
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
    uplink, downlink, admitted, carrier = None, None, None, DEFAULT
    if site is not None:
        from murmura.federation.site_guard import admit
        from murmura.node.site import load_site_config, site_client, site_policy

        if config is None:
            raise typer.BadParameter("--site needs --config JOB.toml (the job's schema)")
        run_cfg, server = split_config(config)
        carrier = server.transport
        site_cfg = load_site_config(site)
        # the job given here is the site operator's own: no submitter to check
        admitted = admit(site_policy(site_cfg, site), site, run_cfg, None)  # before any data
        local = site_client(site_cfg, run_cfg, node)
        uplink = make_uplink(run_cfg, node)  # [compression]: the codec the server expects
        downlink = held_model(run_cfg)
    elif config is not None and partition is not None:
        run_cfg, server = split_config(config)
        carrier = server.transport
        local = client_from_config(run_cfg, partition)
        uplink = make_uplink(run_cfg, node)
        downlink = held_model(run_cfg)
    else:
        assert partition is not None
        held = eval_fraction or None  # 0: nothing held out
        local = local_client(
            task or "digits", partition, partitioner, seed or 0, local_fraction=held
        )
    link = transport(carrier).link(server_address, node, creds)  # [server] transport
    if admitted is not None and admitted.budget is not None:  # a DP job: charged under the
        from murmura.federation.site_guard import ChargedClient, site_learner  # run id
        from murmura.node.site import RefusedSite

        if not isinstance(local, RefusedSite):  # it releases nothing
            learner = site_learner(local)
            local = ChargedClient(local, admitted.charge, lambda: link.run_id, run_cfg, learner)
    return Worker(link, local, limits=limits, uplink=uplink, downlink=downlink)


if __name__ == "__main__":
    from murmura.console import setup

    setup("text", verbose=True)
    app()
