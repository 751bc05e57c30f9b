"""The audit ledger of a real gRPC run over mTLS (RELIABILITY 24).

A worker outside the allowlist is refused, two allowlisted workers train two rounds. The ledger
then holds the joins (with each worker's certificate), the refusal, each round's start and end,
every model sent and update received with the SHA-256 of the bytes that travelled and the
worker's signature; ``murmura audit verify`` passes, with ``--ca`` too, and fails once a row is
edited with sqlite3; a digest or signature changed and the chain re-signed with the ledger key
(what the coordinator could do) passes the ledger key but fails ``--ca``, naming the record.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pytest
from typer.testing import CliRunner

from murmura.cli import app
from murmura.ops.audit import (
    GENESIS,
    LEDGER_FILE,
    PUB_FILE,
    canonical_payload,
    load_or_create_key,
    load_public_key,
    read_records,
    record_hash,
    verify_records,
)
from murmura.transport import keys

pytestmark = [pytest.mark.slow, pytest.mark.network]

NAMES = ["w0", "w1"]


def _sha(vector: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(vector, dtype="<f4").tobytes()).hexdigest()


def _blake3(vector: np.ndarray) -> str:
    return blake3.blake3(np.ascontiguousarray(vector, dtype="<f4").tobytes()).hexdigest()


def _rechain(state: Path, seq: int, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Rewrite record ``seq``'s payload and re-sign the chain from there, with the ledger key."""
    key = load_or_create_key(state)
    records = list(read_records(state / LEDGER_FILE))
    db = sqlite3.connect(state / LEDGER_FILE)
    db.executescript("DROP TRIGGER ledger_no_update; DROP TRIGGER ledger_no_delete;")
    prev = GENESIS
    for r in records:
        payload = canonical_payload(edit(r.details())) if r.seq == seq else r.payload
        digest = record_hash(r.seq, r.time, r.run_id, r.round, r.node, r.event, payload, prev)
        signature = key.sign(bytes.fromhex(digest)).hex()
        db.execute(
            "UPDATE ledger SET payload = ?, prev_hash = ?, hash = ?, signature = ? WHERE seq = ?",
            (payload, prev, digest, signature, r.seq),
        )
        prev = digest
    db.commit()
    db.close()


def test_ledger_of_a_grpc_run(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key_dir = procs.make_keys(tmp_path / "keys", [*NAMES, "intruder"])
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    common = ["--keys", str(key_dir), "--port", str(procs.free_port())]
    coord = procs.start(
        "coordinator", "coordinator", *common, "--state", str(state), "--rounds", "2",
        "--min-clients", "2", "--min-nodes", "2", "--names", ",".join(NAMES),
    )  # fmt: skip
    intruder = procs.start("intruder", "worker", *common, "--name", "intruder", "--out", str(out))
    for name in NAMES:  # w0 waits in round 1 until the intruder was refused
        pause = ["--pause-round", "1"] if name == "w0" else []
        procs.start(name, "worker", *common, "--name", name, "--out", str(out), *pause)
    assert intruder.wait(60) == 0, procs.log("intruder")  # refused: it stops
    (out / "release").touch()
    assert coord.wait(60) == 0, procs.log("coordinator")

    records = list(read_records(state / LEDGER_FILE))
    by_event: dict[str, list] = {}
    for r in records:
        by_event.setdefault(r.event, []).append(r)
    (refused,) = by_event["refuse"]
    assert refused.node == "intruder" and "allowlist" in refused.details()["reason"]
    assert {r.node for r in by_event["join"]} == set(NAMES)
    assert [r.round for r in by_event["round_start"]] == [1, 2]
    assert [r.round for r in by_event["round_end"]] == [1, 2]
    for rnd in (1, 2):
        sent = {r.node: r.details() for r in by_event["model_sent"] if r.round == rnd}
        model = _sha(procs.checkpoint(state, rnd - 1))
        assert set(sent) == set(NAMES) and all(d["sha256"] == model for d in sent.values())
        got = {r.node: r.details() for r in by_event["update_received"] if r.round == rnd}
        for name in NAMES:
            update = np.load(out / f"{name}-r{rnd}.npy", allow_pickle=False)
            n = json.loads((out / f"{name}-r{rnd}.json").read_text())["n"]
            assert got[name]["blake3"] == _blake3(update) and got[name]["num_examples"] == n
        (end,) = [r.details() for r in by_event["round_end"] if r.round == rnd]
        assert end == {
            "participants": 2,
            "failures": 0,
            "model_sha256": _sha(procs.checkpoint(state, rnd)),
        }
    summary = json.loads((procs.run_path(state) / "summary.json").read_text())
    assert summary["audit_head"].split(":")[0] == str(by_event["round_end"][-1].seq)

    # Each update is signed by its worker: the certificate is in its join, the signature with it.
    certs = {r.node: r.details() for r in by_event["join"]}
    for r in by_event["update_received"]:
        d = r.details()
        assert len(bytes.fromhex(d["signature"])) <= 72
        assert certs[r.node]["cert_sha256"] == d["cert_sha256"]
        assert certs[r.node]["certificate"] == (key_dir / f"{r.node}.pem").read_text()

    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", str(state)])
    assert ok.exit_code == 0 and f"{len(records)} records" in ok.output, ok.output
    ok = runner.invoke(app, ["audit", "verify", str(state), "--ca", str(key_dir / "ca.pem")])
    assert ok.exit_code == 0 and "4 worker signatures verified" in ok.output, ok.output
    foreign = tmp_path / "foreign"
    keys.init_ca(foreign)
    bad = runner.invoke(app, ["audit", "verify", str(state), "--ca", str(foreign / "ca.pem")])
    assert bad.exit_code == 1 and "not issued by the given CA" in bad.output, bad.output

    # The coordinator holds the ledger key: it can rewrite and re-sign the chain, but not the
    # worker's signature. Change a stored digest, or the signature, then re-chain the ledger.
    target = by_event["update_received"][1]
    edits = {
        "blake3": lambda d: d | {"blake3": "0" * 64},
        "signature": lambda d: d | {"signature": d["signature"][:-2] + "00"},
    }
    for name, edit in edits.items():
        forged = tmp_path / f"forged-{name}"
        shutil.copytree(state, forged)
        _rechain(forged, target.seq, edit)
        public = load_public_key(forged / PUB_FILE)
        assert verify_records(read_records(forged / LEDGER_FILE), public).ok  # key alone: fine
        ca = ["--ca", str(key_dir / "ca.pem")]
        bad = runner.invoke(app, ["audit", "verify", str(forged), *ca])
        assert bad.exit_code == 1, bad.output
        assert f"record {target.seq}: worker signature of node '{target.node}'" in bad.output
        assert "does not verify" in bad.output
    seq = by_event["update_received"][0].seq
    db = sqlite3.connect(state / LEDGER_FILE)
    db.executescript(
        "DROP TRIGGER ledger_no_update;"
        f"UPDATE ledger SET payload = replace(payload, '\"num_examples\":', "
        f"'\"num_examples\":1') WHERE seq = {seq};"
    )
    db.close()
    bad = runner.invoke(app, ["audit", "verify", str(state)])
    assert bad.exit_code == 1 and f"record {seq}: hash does not match" in bad.output
