"""Floods against a real coordinator over mTLS cost a handful of ledger rows, not one per call.

A valid certificate that is not on the allowlist makes 1,500 Register calls, then the
allowlisted ``w2`` makes 300 parallel Pulls of round 1. One Pull per node runs at a time (the
others are refused) and a node gets at most three copies of a round's model; the ledger gets
one ``refuse`` row and one ``repeated`` row with the count per flood, and one ``model_sent``
row for ``w2``; the coordinator's log a line or two. The coordinator stays up, the honest
``w0`` and ``w1`` train the round, and ``w2``, silent after its flood, counts as lost.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from grpc import aio

from murmura.ops.audit import LEDGER_FILE, read_records
from murmura.transport import codec, keys
from murmura.transport.grpc_server import SERVICE
from murmura.transport.proto import murmura_pb2 as pb

pytestmark = [pytest.mark.slow, pytest.mark.network]

REGISTERS, PULLS = 1500, 300


def _channel(key_dir: Path, name: str, port: int) -> aio.Channel:
    f = keys.node_files(key_dir, name)
    c = keys.Credentials.load(f.cert, f.key, f.ca)
    creds = grpc.ssl_channel_credentials(c.ca, c.key, c.cert)
    return aio.secure_channel(f"127.0.0.1:{port}", creds)


async def _register_flood(key_dir: Path, port: int) -> Counter[str]:
    """``REGISTERS`` Register calls as ``intruder``, 100 in flight: their status codes."""
    req = pb.RegisterRequest(version=codec.PROTOCOL_VERSION, node="intruder").SerializeToString()
    codes: Counter[str] = Counter()
    async with _channel(key_dir, "intruder", port) as ch:
        await asyncio.wait_for(ch.channel_ready(), 30)
        register = ch.unary_unary(f"/{SERVICE}/Register")
        gate = asyncio.Semaphore(100)

        async def one() -> None:
            async with gate:
                try:
                    await register(req, timeout=30)
                    codes["OK"] += 1
                except aio.AioRpcError as exc:
                    codes[exc.code().name] += 1

        await asyncio.gather(*(one() for _ in range(REGISTERS)))
    return codes


async def _pull_flood(key_dir: Path, port: int) -> Counter[str]:
    """``PULLS`` parallel Pulls as ``w2`` (they make it alive, so round 1 opens for it)."""
    req = pb.PullRequest(version=codec.PROTOCOL_VERSION, node="w2", wait_ms=2000)
    codes: Counter[str] = Counter()
    async with _channel(key_dir, "w2", port) as ch:
        await asyncio.wait_for(ch.channel_ready(), 30)
        pull = ch.unary_stream(f"/{SERVICE}/Pull")

        async def one() -> None:
            try:
                frames = [m async for m in pull(req.SerializeToString(), timeout=30)]
                ins = pb.Instruction.FromString(frames[0])
                codes[pb.Kind.Name(ins.header.kind) if len(frames) > 1 else "no model"] += 1
            except aio.AioRpcError as exc:
                codes[exc.code().name] += 1

        await asyncio.gather(*(one() for _ in range(PULLS)))
    return codes


def test_register_and_pull_floods_cost_a_handful_of_rows(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key_dir = procs.make_keys(tmp_path / "keys", ["w0", "w1", "w2", "intruder"])
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    port = procs.free_port()
    common = ["--keys", str(key_dir), "--port", str(port)]
    coord = procs.start(
        "coordinator", "coordinator", *common, "--state", str(state), "--rounds", "1",
        "--min-clients", "2", "--min-nodes", "3", "--names", "w0,w1,w2", "--timeout", "30",
    )  # fmt: skip
    t0 = time.monotonic()
    registers = asyncio.run(_register_flood(key_dir, port))
    register_s = time.monotonic() - t0
    assert registers == {"PERMISSION_DENIED": REGISTERS}
    for name in ("w0", "w1"):
        procs.start(name, "worker", *common, "--name", name, "--out", str(out))
    lines = ("node=w0 round=0: registered", "node=w1 round=0: registered")
    procs.wait_for(lambda: all(x in procs.log("coordinator") for x in lines), 30, "w0, w1 to join")
    t1 = time.monotonic()
    pulls = asyncio.run(_pull_flood(key_dir, port))
    pull_s = time.monotonic() - t1
    assert coord.wait(60) == 0, procs.log("coordinator")

    records = list(read_records(state / LEDGER_FILE))
    rows = Counter((r.node, r.event) for r in records)
    log = procs.log("coordinator")
    figures = {
        "register_flood_s": round(register_s, 2),
        "pull_flood_s": round(pull_s, 2),
        "pulls": dict(pulls),
        "ledger_rows": len(records),
        "rows": {f"{n}/{e}": k for (n, e), k in sorted(rows.items())},
        "intruder_log_lines": sum("node=intruder" in line for line in log.splitlines()),
        "w2_log_lines": sum("node=w2" in line for line in log.splitlines()),
    }
    print("flood figures:", figures)

    # the register flood: one refusal row, one summary with the other 1,499
    assert rows[("intruder", "refuse")] == 1, figures
    (summary,) = [r.details() for r in records if (r.node, r.event) == ("intruder", "repeated")]
    assert summary["repeat_of"] == "refuse" and summary["code"] == "PERMISSION_DENIED"
    assert summary["count"] == REGISTERS - 1 and summary["window_s"] == 60.0
    assert figures["intruder_log_lines"] <= 2, figures
    # the pull flood: one Pull at a time, three copies at most, one model_sent row
    assert sum(pulls.values()) == PULLS and 1 <= pulls["FIT"] <= 3, pulls
    sent = sorted((r.node, r.round) for r in records if r.event == "model_sent")
    assert sent == [("w0", 1), ("w1", 1), ("w2", 1)], figures
    w2 = {
        r.details()["repeat_of"]: r.details()
        for r in records
        if r.node == "w2" and r.event == "repeated"
    }
    refused = pulls["ALREADY_EXISTS"]
    assert rows[("w2", "refuse")] == 1 and w2["refuse"]["count"] == refused - 1, figures
    if pulls["FIT"] > 1:
        assert w2["model_sent"]["count"] == pulls["FIT"] - 1, figures
    assert figures["w2_log_lines"] <= 12, figures
    assert len(records) <= 20, figures
    # the honest workers trained the round; the silent w2 was lost
    (end,) = [r.details() for r in records if r.event == "round_end"]
    assert end["participants"] == 2 and end["failures"] == 1, figures
