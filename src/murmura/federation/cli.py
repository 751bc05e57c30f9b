"""``murmura job``: an admin submits, lists, watches, aborts and downloads a federation's jobs.

Every command dials the federation's coordinator (``--server``) with the admin's certificate
(``--cert``, ``--key``, ``--ca``; ``murmura keys issue --role admin``); a certificate of
another role gets PERMISSION_DENIED.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from murmura.errors import MurmuraError

job_app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()

Server = Annotated[str, typer.Option("--server", help="The federation's coordinator HOST:PORT.")]
Cert = Annotated[Path, typer.Option("--cert", help="Admin certificate (PEM).")]
Key = Annotated[Path, typer.Option("--key", help="Admin private key (PEM).")]
Ca = Annotated[Path, typer.Option("--ca", help="Project CA certificate (PEM).")]
JobId = Annotated[str, typer.Argument(help="The job's id (job-1, ...).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the reply as JSON.")]


def _call(server: str, cert: Path, key: Path, ca: Path, method: str, msg: dict[str, Any]) -> Any:
    from murmura.federation.link import FederationLink
    from murmura.transport import keys

    try:
        link = FederationLink(server, keys.Credentials.load(cert, key, ca))
        try:
            return link.call(method, msg)
        finally:
            link.close()
    except MurmuraError as exc:
        raise _fail(exc) from None


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(2)


def _show(job: dict[str, Any]) -> None:
    console.print(
        f"{job['id']} {job['name']} [bold]{job['status']}[/bold] (by {job['submitter']}, "
        f"submitted {job['submitted']})",
        soft_wrap=True,
    )
    if job.get("reason"):
        console.print(f"  reason: {escape(job['reason'])}", soft_wrap=True)
    if job.get("run_id"):
        console.print(f"  run: {job['run_id']}")
    for s in job.get("sites", []):
        answer = "accepted" if s["accepted"] else f"refused: {s['reason']}"
        console.print(f"  site {s['site']}: {escape(answer)}", soft_wrap=True)


@job_app.command("submit")
def submit(
    config: Annotated[Path, typer.Argument(help="The job: a run config (TOML).")],
    server: Server, cert: Cert, key: Key, ca: Ca,
    name: Annotated[str | None, typer.Option("--name", help="Job name (default: file's).")] = None,
    as_json: AsJson = False,
) -> None:  # fmt: skip
    """Queue a job; it runs when the jobs before it have ended."""
    try:
        text = config.read_text()
    except OSError as exc:
        raise _fail(MurmuraError(f"{config}: {exc}")) from None
    got = _call(server, cert, key, ca, "Submit", {"config": text, "name": name or config.stem})
    if as_json:
        console.print_json(json.dumps(got["job"]))
        return
    console.print(f"submitted {got['job']['id']} ({got['job']['name']})")


@job_app.command("list")
def list_jobs(server: Server, cert: Cert, key: Key, ca: Ca, as_json: AsJson = False) -> None:
    """Every job of the federation, oldest first."""
    jobs = _call(server, cert, key, ca, "List", {})["jobs"]
    if as_json:
        console.print_json(json.dumps(jobs))
        return
    table = Table("id", "name", "status", "by", "submitted", "reason")
    for j in jobs:
        table.add_row(j["id"], j["name"], j["status"], j["submitter"], j["submitted"], j["reason"])
    console.print(table)


@job_app.command("status")
def status(
    job_id: JobId, server: Server, cert: Cert, key: Key, ca: Ca, as_json: AsJson = False
) -> None:
    """A job's status, its reason, and each site's answer."""
    job = _call(server, cert, key, ca, "Status", {"id": job_id})["job"]
    if as_json:
        console.print_json(json.dumps(job))
        return
    _show(job)


@job_app.command("abort")
def abort(job_id: JobId, server: Server, cert: Cert, key: Key, ca: Ca) -> None:
    """Abort a queued or running job."""
    job = _call(server, cert, key, ca, "Abort", {"id": job_id})["job"]
    console.print(f"abort of {job['id']} asked (status now {job['status']})")


@job_app.command("logs")
def logs(job_id: JobId, server: Server, cert: Cert, key: Key, ca: Ca) -> None:
    """The job's log lines (the last MiB)."""
    text = _call(server, cert, key, ca, "Logs", {"id": job_id})["log"]
    console.out(text, end="", highlight=False)


@job_app.command("download")
def download(
    job_id: JobId,
    directory: Annotated[Path, typer.Argument(help="Folder to write the job's outputs into.")],
    server: Server, cert: Cert, key: Key, ca: Ca,
) -> None:  # fmt: skip
    """Download a job's final model, metrics, summary, plots, log and ledger extract."""
    from murmura.federation.link import FederationLink
    from murmura.transport import keys

    parts: dict[str, list[bytes]] = {}
    try:
        link = FederationLink(server, keys.Credentials.load(cert, key, ca))
        try:
            for frame in link.stream("Download", {"id": job_id}, timeout_s=300):
                parts.setdefault(_safe_name(frame["file"]), []).append(
                    base64.b64decode(frame["data"], validate=True)
                )
        finally:
            link.close()
    except (MurmuraError, ValueError) as exc:
        raise _fail(exc) from None
    directory.mkdir(parents=True, exist_ok=True)
    for name, chunks in parts.items():
        (directory / name).write_bytes(b"".join(chunks))
    console.print(f"{job_id}: {len(parts)} files in {directory}: {', '.join(sorted(parts))}")


def _safe_name(name: object) -> str:
    """A file name from the coordinator, refused if it is a path (no writing outside DIR)."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise MurmuraError(f"the coordinator sent a bad file name: {name!r}")
    return name
