"""The audit ledger (RELIABILITY 24): any change, deletion, reordering or cut tail is found."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from murmura.cli import app
from murmura.errors import AuditError
from murmura.ops import audit
from murmura.ops.audit import Anchor, AuditLedger, Head, Record, verify_records
from murmura.storage import save_tensors_atomically

N = 8
FIELDS = [f.name for f in dataclasses.fields(Record)]
runner = CliRunner()


@cache
def _key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _fill(ledger: AuditLedger, n: int, run_id: str = "run-1") -> None:
    for i in range(n):
        event = ("join", "model_sent", "update_received", "refuse")[i % 4]
        ledger.append(run_id, i // 4, f"w{i % 3}", event, sha256=f"{i:064x}", num_examples=i)


def _scratch_ledger(key: Ed25519PrivateKey) -> AuditLedger:
    """A ledger in a fresh temporary folder (a path ':memory:' would be a file of that name)."""
    return AuditLedger(Path(tempfile.mkdtemp(prefix="murmura-audit-")) / "audit.sqlite", key)


@cache
def _chain() -> tuple[Record, ...]:
    """N signed records, made once (tuples: every test mutates its own copy)."""
    ledger = _scratch_ledger(_key())
    _fill(ledger, N)
    rows = ledger.db.execute(f"SELECT {audit._COLUMNS} FROM ledger ORDER BY seq").fetchall()
    ledger.close()
    return tuple(Record(*r) for r in rows)


def _verify(records: list[Record], anchors: list[Anchor] | None = None) -> audit.Verdict:
    return verify_records(records, _key().public_key(), anchors or [])


def _full_head() -> Anchor:
    last = _chain()[-1]
    return Anchor(Head(last.seq, last.hash), "test")


def test_untouched_ledger_verifies_with_every_anchor() -> None:
    records = list(_chain())
    anchors = [Anchor(Head(r.seq, r.hash), f"pin {r.seq}") for r in records]
    verdict = _verify(records, anchors)
    assert verdict.ok and verdict.records == N and verdict.head == _full_head().head


def test_empty_ledger_verifies() -> None:
    verdict = _verify([])
    assert verdict.ok and verdict.records == 0 and verdict.head is None


@settings(max_examples=200, deadline=None)
@given(
    index=st.integers(0, N - 1),
    name=st.sampled_from(FIELDS),
    value=st.one_of(st.text(max_size=70), st.integers(-5, 100), st.none(), st.floats()),
)
def test_any_single_field_change_is_detected(index: int, name: str, value: object) -> None:
    records = list(_chain())
    if getattr(records[index], name) == value:
        value = f"{value}x"
    records[index] = dataclasses.replace(records[index], **{name: value})
    verdict = _verify(records, [_full_head()])
    assert not verdict.ok and verdict.records == index, verdict


@given(index=st.integers(0, N - 2))
def test_deleting_a_record_is_detected(index: int) -> None:
    records = list(_chain())
    del records[index]
    verdict = _verify(records)
    assert not verdict.ok and verdict.records == index
    assert verdict.bad_seq == index + 2 and "deleted or reordered" in verdict.reason


@given(pair=st.lists(st.integers(0, N - 1), min_size=2, max_size=2, unique=True))
def test_swapping_two_records_is_detected(pair: list[int]) -> None:
    i, j = sorted(pair)
    moved = list(_chain())
    moved[i], moved[j] = moved[j], moved[i]  # rows change places, each keeps its seq
    renumbered = list(_chain())  # contents change places, each place keeps its seq
    renumbered[i] = dataclasses.replace(_chain()[j], seq=i + 1)
    renumbered[j] = dataclasses.replace(_chain()[i], seq=j + 1)
    for records in (moved, renumbered):
        verdict = _verify(records, [_full_head()])
        assert not verdict.ok and verdict.records == i


@given(keep=st.integers(0, N - 1))
def test_a_truncated_tail_is_detected_by_a_pinned_head(keep: int) -> None:
    records = list(_chain())[:keep]
    assert _verify(records).ok  # the chain alone cannot tell
    verdict = _verify(records, [_full_head()])
    assert not verdict.ok and verdict.bad_seq == keep + 1
    assert verdict.reason.startswith("truncated: test names record 8:")


def test_a_pinned_head_of_another_ledger_is_detected() -> None:
    other = Anchor(Head(3, "ab" * 32), "summary.json")
    verdict = _verify(list(_chain()), [other])
    assert not verdict.ok and verdict.bad_seq == 3 and "summary.json" in verdict.reason


def test_a_rewritten_chain_without_the_key_is_detected() -> None:
    """A forger edits record 3, recomputes every hash after it, and signs with its own key."""
    forger = _scratch_ledger(Ed25519PrivateKey.generate())
    for r in _chain():
        node = "evil" if r.seq == 3 else r.node
        forger.append(r.run_id, r.round, node, r.event, **r.details())
    rows = forger.db.execute(f"SELECT {audit._COLUMNS} FROM ledger ORDER BY seq").fetchall()
    verdict = _verify([Record(*r) for r in rows])
    assert not verdict.ok and verdict.bad_seq == 1 and "signature" in verdict.reason


def test_payload_is_canonical_and_long_text_is_cut() -> None:
    text = audit.canonical_payload({"b": 1, "a": "x" * 1000, "c": True})
    assert text == json.dumps({"a": "x" * audit.MAX_TEXT, "b": 1, "c": True}).replace(" ", "")
    with pytest.raises(ValueError, match="unknown audit event"):
        _scratch_ledger(_key()).append("r", 1, "w0", "joined")


# -- the ledger file ----------------------------------------------------------------------
def test_the_ledger_is_append_only_and_resumes_its_chain(tmp_path: Path) -> None:
    ledger = AuditLedger.open(tmp_path)
    _fill(ledger, 3)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        ledger.db.execute("UPDATE ledger SET node = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        ledger.db.execute("DELETE FROM ledger WHERE seq = 3")
    ledger.close()
    assert oct((tmp_path / audit.KEY_FILE).stat().st_mode & 0o777) == "0o600"
    ledger = AuditLedger.open(tmp_path)  # the same key, the chain goes on
    assert ledger.head is not None and ledger.head.seq == 3
    _fill(ledger, 2, "run-2")
    ledger.close()
    verdict = audit.verify_state_dir(tmp_path)
    assert verdict.ok and verdict.records == 5
    assert {r.run_id for r in audit.read_records(tmp_path / audit.LEDGER_FILE, "run-2")} == {
        "run-2"
    }


def test_a_ledger_signed_by_another_key_is_not_continued(tmp_path: Path) -> None:
    ledger = AuditLedger.open(tmp_path)
    _fill(ledger, 2)
    ledger.close()
    (tmp_path / audit.KEY_FILE).unlink()
    with pytest.raises(AuditError, match="does not verify with this ledger key"):
        AuditLedger.open(tmp_path)


def _state_dir(tmp_path: Path, n: int = 6) -> tuple[Path, Head]:
    """A state dir with a ledger, a checkpoint pinning its head, and a summary pinning it."""
    ledger = AuditLedger.open(tmp_path)
    _fill(ledger, n)
    run = tmp_path / "runs" / "run-1"
    ckpt = run / "checkpoints" / "round-00001.safetensors"
    save_tensors_atomically(ckpt, {"a": np.zeros(2, np.float32)}, ledger.pinned())
    head = ledger.head
    assert head is not None
    (run / "summary.json").write_text(json.dumps({"audit_head": str(head)}))
    ledger.close()
    return tmp_path, head


def _tamper(state: Path, sql: str) -> None:
    db = sqlite3.connect(state / audit.LEDGER_FILE)
    db.executescript(f"DROP TRIGGER ledger_no_update; DROP TRIGGER ledger_no_delete; {sql};")
    db.close()


def test_verify_cli_ok_then_names_the_first_bad_record(tmp_path: Path) -> None:
    state, head = _state_dir(tmp_path)
    pub = tmp_path.parent / f"{tmp_path.name}-trusted.pub"
    pub.write_bytes((state / audit.PUB_FILE).read_bytes())
    ok = runner.invoke(app, ["audit", "verify", str(state), "--key", str(pub)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip() == f"6 records, head {head}, ok"
    pinned = runner.invoke(app, ["audit", "verify", str(state), "--head", str(head)])
    assert pinned.exit_code == 0 and "pass --key" in pinned.output
    _tamper(state, "UPDATE ledger SET node = 'w9' WHERE seq = 4")
    bad = runner.invoke(app, ["audit", "verify", str(state), "--key", str(pub)])
    assert bad.exit_code == 1
    assert "record 4: hash does not match" in bad.output.replace("\n", " ")


def test_verify_cli_finds_a_cut_tail_through_the_checkpoint(tmp_path: Path) -> None:
    state, _ = _state_dir(tmp_path)
    _tamper(state, "DELETE FROM ledger WHERE seq = 6")
    bad = runner.invoke(app, ["audit", "verify", str(state)])
    assert bad.exit_code == 1
    assert "record 6: truncated:" in bad.output and "round-00001.safetensors" in bad.output


def test_verify_cli_refuses_another_key_and_bad_input(tmp_path: Path) -> None:
    state, _ = _state_dir(tmp_path)
    other = tmp_path / "other.pub"
    other.write_bytes(audit.public_pem(Ed25519PrivateKey.generate().public_key()))
    bad = runner.invoke(app, ["audit", "verify", str(state), "--key", str(other)])
    assert bad.exit_code == 1 and "record 1: signature does not verify" in bad.output
    assert runner.invoke(app, ["audit", "verify", str(state), "--head", "7:zz"]).exit_code == 2
    missing = runner.invoke(app, ["audit", "verify", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "error" in missing.output


def test_show_cli_lists_the_last_records(tmp_path: Path) -> None:
    state, _ = _state_dir(tmp_path)
    out = runner.invoke(app, ["audit", "show", str(state), "--run", "run-1", "--limit", "2"])
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 2 and lines[0].split()[0] == "5" and "model_sent" in lines[1]
