"""The audit ledger (RELIABILITY 24): append-only, hash-chained records signed with Ed25519.

The coordinator appends one record per join, refusal, round start and end, model sent, update
received or rejected, and worker error (a worker's fit or evaluate raised) to ``audit.sqlite``
in its state dir; a caller repeating an event (a flood of refused calls) gets a record for the
first and one ``repeated`` record with the count per window (``transport.repeats``). A
record's hash is the SHA-256 of a canonical encoding of its fields and of the previous
record's hash, and the coordinator signs that hash with its ledger key: a changed field, a
deleted record or two records swapped break a hash, the chain or a signature. A cut-off tail
leaves a valid chain, so the coordinator also writes the head (seq and hash of the last
record) into every round checkpoint's metadata and into ``summary.json``;
``verify_state_dir`` checks that the ledger still holds each of these heads. An update record
also holds its worker's own signature, which ``audit_authors`` checks against the project CA.

The key is ``audit.key`` (Ed25519, PKCS8 PEM, mode 0600) in the state dir, made on first start
unless the operator placed one there; ``audit.pub`` is its public half. A verifier should take
the public key from a copy it trusts (the state dir's copy can be rewritten with the ledger),
and whoever can read the private key can sign a forged ledger: keep it from those who can
write the state dir, and copy the head out (``murmura audit verify`` prints it) to pin it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from murmura.errors import AuditError
from murmura.storage import open_sqlite

LEDGER_FILE, KEY_FILE, PUB_FILE = "audit.sqlite", "audit.key", "audit.pub"
HEAD_KEY = "murmura.audit_head"
"""Checkpoint metadata key (and ``summary.json`` key ``audit_head``) holding ``"seq:hash"``."""
GENESIS = "0" * 64
"""The ``prev_hash`` of the first record."""
EVENTS = frozenset(
    {
        "join",
        "refuse",
        "round_start",
        "round_end",
        "model_sent",
        "update_received",
        "result_received",
        "update_duplicate",
        "update_rejected",
        "worker_error",
        "repeated",
        "job_submit",
        "job_abort",
        "job_download",
        "job_end",
    }
)
MAX_TEXT = 256
"""Longer payload strings are cut: a refusal reason may quote what a caller sent."""
LONG_TEXT = {"certificate": 16384}
"""Payload keys whose text may be longer (a worker's PEM certificate in a ``join`` record)."""
RecordCheck = Callable[["Record"], str | None]
"""A further check of each record once its chain link verified: why it is bad, or None."""
RECOVER = (
    "restore it from a backup (its signed records cannot be rebuilt), or move the state dir "
    "aside to start a new run"
)
_DOMAIN = b"murmura.audit.v1\n"
_COLUMNS = "seq, time, run_id, round, node, event, payload, prev_hash, hash, signature"
_INSERT = f"INSERT INTO ledger ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    node TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'the audit ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS ledger_no_delete BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'the audit ledger is append-only'); END;
"""
# The triggers stop mistakes, not attackers (they can drop them): the chain is the guard.


@dataclass(frozen=True, slots=True)
class Record:
    """One ledger row. ``payload`` is canonical JSON text, hashed exactly as stored."""

    seq: int
    time: str
    run_id: str
    round: int
    node: str
    event: str
    payload: str
    prev_hash: str
    hash: str
    signature: str

    def details(self) -> dict[str, object]:
        """The payload as a dict (empty if it does not parse)."""
        try:
            value = json.loads(self.payload)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class Head:
    """The last record of a ledger, by seq and hash: what a checkpoint or an operator pins."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> Head:
        """Read ``"seq:hash"``; ``ValueError`` if it is not one."""
        seq, _, digest = text.strip().partition(":")
        if not seq.isdigit() or len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise ValueError(f"{text!r} is not SEQ:SHA256HEX")
        return cls(int(seq), digest)


@dataclass(frozen=True, slots=True)
class Anchor:
    """A head recorded outside the ledger, and where it was found."""

    head: Head
    source: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a verification: the first bad seq and why, or ``ok``."""

    records: int
    head: Head | None
    bad_seq: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Return whether every check passed."""
        return self.bad_seq is None


def canonical_payload(details: Mapping[str, object]) -> str:
    """Details as canonical JSON (sorted keys, no spaces, ASCII); long strings are cut."""
    cut = {
        k: v[: LONG_TEXT.get(k, MAX_TEXT)] if isinstance(v, str) else v for k, v in details.items()
    }
    return json.dumps(cut, sort_keys=True, separators=(",", ":"), allow_nan=False)


def record_hash(
    seq: int,
    time: str,
    run_id: str,
    round_: int,
    node: str,
    event: str,
    payload: str,
    prev_hash: str,
) -> str:
    """SHA-256 (hex) over a canonical JSON array of a record's fields and the previous hash."""
    body = [seq, time, run_id, round_, node, event, payload, prev_hash]
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(_DOMAIN + text.encode()).hexdigest()


def _types_ok(rec: Record) -> bool:
    values = _row(rec)
    ints, texts = (values[0], values[3]), values[1:3] + values[4:]
    return all(type(v) is int for v in ints) and all(type(v) is str for v in texts)


def check_record(rec: Record, seq: int, prev_hash: str, key: Ed25519PublicKey) -> str | None:
    """Why ``rec`` cannot be record ``seq`` after a record hashed ``prev_hash``; None if it can."""
    if not _types_ok(rec):
        return "a field has the wrong type (the row was edited)"
    if rec.seq != seq:
        return f"seq {rec.seq} where {seq} was expected (records deleted or reordered)"
    if rec.prev_hash != prev_hash:
        return "prev_hash is not the previous record's hash (records deleted or reordered)"
    fields = (rec.seq, rec.time, rec.run_id, rec.round, rec.node, rec.event, rec.payload)
    if record_hash(*fields, rec.prev_hash) != rec.hash:
        return "hash does not match the record's fields (a field was changed)"
    try:
        key.verify(bytes.fromhex(rec.signature), bytes.fromhex(rec.hash))
    except (InvalidSignature, ValueError):
        return "signature does not verify with the ledger key"
    return None


def verify_records(
    records: Iterable[Record],
    key: Ed25519PublicKey,
    anchors: Sequence[Anchor] = (),
    check: RecordCheck | None = None,
) -> Verdict:
    """Check the chain record by record, then that it still holds every anchored head.

    ``check`` runs on each record whose link verified (the worker signatures, ``--ca``).
    """
    prev, n, hashes = GENESIS, 0, {}
    wanted = {a.head.seq for a in anchors}
    for rec in records:
        why = check_record(rec, n + 1, prev, key)
        if why is None and check is not None:
            why = check(rec)
        if why is not None:
            bad = rec.seq if type(rec.seq) is int else n + 1
            return Verdict(n, Head(n, prev) if n else None, bad, why)
        n, prev = n + 1, rec.hash
        if n in wanted:
            hashes[n] = rec.hash
    head = Head(n, prev) if n else None
    for a in sorted(anchors, key=lambda a: a.head.seq):
        if a.head.seq > n:
            why = f"truncated: {a.source} names record {a.head}, the ledger ends at record {n}"
            return Verdict(n, head, n + 1, why)
        if hashes.get(a.head.seq) != a.head.hash:
            why = f"differs from the head recorded in {a.source} ({a.head})"
            return Verdict(n, head, a.head.seq, why)
    return Verdict(n, head)


# -- keys ---------------------------------------------------------------------------------
def load_or_create_key(state_dir: Path) -> Ed25519PrivateKey:
    """The ledger key in ``state_dir`` (made on first use); writes ``audit.pub`` if missing."""
    path = state_dir / KEY_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise AuditError(f"{path}: cannot read the ledger key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"{path} is not an Ed25519 private key")
    pub = state_dir / PUB_FILE
    if not pub.exists():
        pub.write_bytes(public_pem(key.public_key()))
    return key


def public_pem(key: Ed25519PublicKey) -> bytes:
    """The public key as PEM (SubjectPublicKeyInfo), as in ``audit.pub``."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key (PEM) that the verifier trusts."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise AuditError(f"cannot read the ledger's public key {path}: {reason}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise AuditError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditError(f"{path} is not an Ed25519 public key")
    return key


# -- the ledger file ----------------------------------------------------------------------
class AuditLedger:
    """Appends signed, chained records to a ledger file; one writer (the coordinator)."""

    def __init__(self, path: Path | str, key: Ed25519PrivateKey) -> None:
        self.path = Path(path)
        # synchronous=FULL: a checkpoint may pin the head at once
        self.db = open_sqlite(self.path, SCHEMA, RECOVER)
        self._key = key
        self._lock = threading.Lock()
        row = self.db.execute(f"SELECT {_COLUMNS} FROM ledger ORDER BY seq DESC LIMIT 1")
        values = row.fetchone()
        last = Record(*values) if values is not None else None
        self._head: Head | None = None
        if last is not None:
            if check_record(last, last.seq, last.prev_hash, key.public_key()) is not None:
                raise AuditError(
                    f"{self.path}: its last record does not verify with this ledger key "
                    f"(another key, or an edited ledger); run `murmura audit verify`"
                )
            self._head = Head(last.seq, last.hash)

    @classmethod
    def open(cls, state_dir: Path) -> AuditLedger:
        """The ledger of a coordinator's state dir, signed with the dir's ledger key."""
        return cls(state_dir / LEDGER_FILE, load_or_create_key(state_dir))

    @property
    def head(self) -> Head | None:
        """The last record's seq and hash (None while empty)."""
        return self._head

    def pinned(self) -> dict[str, str]:
        """The head as checkpoint metadata, ``{HEAD_KEY: "seq:hash"}`` (empty while empty)."""
        return {HEAD_KEY: str(self._head)} if self._head is not None else {}

    def append(self, run_id: str, round_: int, node: str, event: str, **details: object) -> Record:
        """Sign and append one record; it is on disk when this returns."""
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}; valid: {', '.join(sorted(EVENTS))}")
        payload = canonical_payload(details)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
        with self._lock:
            seq, prev = (self._head.seq + 1, self._head.hash) if self._head else (1, GENESIS)
            digest = record_hash(seq, now, run_id, round_, node, event, payload, prev)
            sig = self._key.sign(bytes.fromhex(digest)).hex()
            rec = Record(seq, now, run_id, round_, node, event, payload, prev, digest, sig)
            self.db.execute(_INSERT, _row(rec))
            self._head = Head(seq, digest)
        return rec

    def recorder(self, run_id: str) -> Callable[[str, str, int, Mapping[str, object]], None]:
        """A callback for the transport hub that appends its events under ``run_id``."""

        def record(event: str, node: str, round_: int, details: Mapping[str, object]) -> None:
            self.append(run_id, round_, node, event, **details)

        return record

    def close(self) -> None:
        """Close the file."""
        self.db.close()


def _row(rec: Record) -> tuple[object, ...]:
    return (
        rec.seq,
        rec.time,
        rec.run_id,
        rec.round,
        rec.node,
        rec.event,
        rec.payload,
        rec.prev_hash,
        rec.hash,
        rec.signature,
    )


def read_records(path: Path, run_id: str | None = None) -> Iterator[Record]:
    """Records of a ledger file in seq order (only ``run_id``'s if given), read-only."""
    if not path.exists():
        raise AuditError(f"no audit ledger at {path}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        where, args = ("WHERE run_id = ?", (run_id,)) if run_id else ("", ())
        for row in db.execute(f"SELECT {_COLUMNS} FROM ledger {where} ORDER BY seq", args):
            yield Record(*row)
    except sqlite3.DatabaseError as exc:
        raise AuditError(f"{path}: cannot read the ledger: {exc}") from None
    finally:
        db.close()


def find_anchors(state_dir: Path) -> list[Anchor]:
    """Heads the coordinator pinned outside the ledger: checkpoint metadata, summary.json."""
    from safetensors import SafetensorError, safe_open

    found: list[Anchor] = []
    for path in sorted(state_dir.glob("runs/*/checkpoints/*.safetensors")):
        try:
            with safe_open(str(path), "np") as fh:
                text = (fh.metadata() or {}).get(HEAD_KEY)
        except (SafetensorError, OSError) as exc:
            raise AuditError(f"{path}: cannot read its pinned head: {exc}") from None
        if text is not None:
            found.append(_anchor(text, str(path)))
    for path in sorted(state_dir.glob("runs/*/summary.json")):
        text = json.loads(path.read_text()).get("audit_head")
        if text is not None:
            found.append(_anchor(str(text), str(path)))
    return found


def _anchor(text: str, source: str) -> Anchor:
    try:
        return Anchor(Head.parse(text), source)
    except ValueError as exc:
        raise AuditError(f"{source}: malformed audit head: {exc}") from None


def verify_state_dir(
    state_dir: Path,
    key: Path | None = None,
    heads: Sequence[Head] = (),
    check: RecordCheck | None = None,
) -> Verdict:
    """Verify a coordinator's ledger with a trusted public key (default: its ``audit.pub``).

    The ledger must hold every head pinned in the run folders and every one in ``heads``;
    ``check`` is run on every record too (``audit_authors.WorkerSignatures``).
    """
    public = load_public_key(key or state_dir / PUB_FILE)
    anchors = find_anchors(state_dir) + [Anchor(h, "--head") for h in heads]
    return verify_records(read_records(state_dir / LEDGER_FILE), public, anchors, check)
