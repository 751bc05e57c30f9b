"""The dashboard's Starlette app: a static page, JSON snapshots and a server-sent event stream.

``/api/events?run=ID`` sends one snapshot (run list, the selected run's series, the live
coordinator) at once and another whenever a file it comes from changes: the stream polls the
files' (mtime, size) every ``poll`` seconds, which costs a ``stat`` per file, not a read. Every
handler only reads; a run id that is not a plain folder name under the runs folder is a 404
(the stream accepts a plain name whose folder does not exist yet, and shows it once it does).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from murmura.dashboard import sources
from murmura.ops.run_dir import METRICS_FILE, SUMMARY_FILE

STATIC = Path(__file__).parent / "static"
KEEPALIVE_S = 15.0


def create_app(runs: Path, state: Path | None = None, poll: float = 0.1) -> Starlette:
    """The app over the runs folder ``runs`` and, optionally, a coordinator's ``state`` dir."""

    def snapshot(run_id: str | None) -> dict[str, Any]:
        path = sources.run_path(runs, run_id) if run_id else None
        return {
            "runs": sources.list_runs(runs),
            "run": sources.run_detail(path) if path else None,
            "coordinator": sources.coordinator_state(state) if state else None,
        }

    def watched(run_id: str | None) -> list[Path]:
        files = [runs]
        path = sources.run_path(runs, run_id) if run_id else None
        if path:
            files += [path / METRICS_FILE, path / SUMMARY_FILE]
        if state:
            db = state / sources.STATE_FILE
            files += [db, db.with_name(db.name + "-wal")]
        return files

    async def index(_: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def api_runs(_: Request) -> Response:
        return JSONResponse(sources.list_runs(runs))

    async def api_run(request: Request) -> Response:
        path = sources.run_path(runs, request.path_params["run_id"])
        if path is None:
            return JSONResponse({"error": "no such run"}, status_code=404)
        return JSONResponse(sources.run_detail(path))

    async def events(request: Request) -> Response:
        run_id = request.query_params.get("run") or None
        if run_id and not sources.RUN_ID.match(run_id):  # a run not there yet is fine
            return JSONResponse({"error": "no such run"}, status_code=404)

        async def stream() -> AsyncIterator[str]:
            last: tuple[tuple[int, int], ...] | None = None
            idle = 0.0
            while not await request.is_disconnected():
                sig = sources.signature(watched(run_id))
                if sig != last:
                    last, idle = sig, 0.0
                    yield f"data: {json.dumps(snapshot(run_id), allow_nan=False)}\n\n"
                elif idle >= KEEPALIVE_S:
                    idle = 0.0
                    yield ": keepalive\n\n"
                await asyncio.sleep(poll)
                idle += poll

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/runs", api_runs),
            Route("/api/runs/{run_id}", api_run),
            Route("/api/events", events),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )
