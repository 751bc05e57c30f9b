"""Crash-safe files: a write lands whole or not at all (temp file, fsync, rename, fsync dir).

Every safetensors file written here carries the SHA-256 of its content (tensors and other
metadata) in its own metadata, so a reader finds a flipped byte or a cut-off file without
any other record (``load_tensors_verified``). SQLite state files are created whole too and
checked when opened (``open_sqlite``): an empty, foreign or damaged file is refused, never
silently replaced by a new, empty database.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from murmura.errors import CheckpointError, StateFileError

log = logging.getLogger(__name__)
CONTENT_KEY = "murmura.content_sha256"
"""Metadata key of a safetensors file's own content digest (``content_sha256``)."""
SQLITE_MAGIC = b"SQLite format 3\x00"
Array = NDArray[Any]


def content_sha256(tensors: Mapping[str, Array], metadata: Mapping[str, str]) -> str:
    """SHA-256 over the metadata (but its own key) and every tensor's name, dtype, shape, bytes."""
    h = hashlib.sha256(b"murmura.safetensors.v1\n")
    meta = {k: v for k, v in metadata.items() if k != CONTENT_KEY}
    h.update(json.dumps(meta, sort_keys=True, ensure_ascii=True).encode())
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_tensors_atomically(
    path: Path,
    tensors: Mapping[str, NDArray[np.generic]],
    metadata: Mapping[str, str] | None = None,
    *,
    durable: bool = True,
) -> None:
    """Write ``tensors`` as a safetensors file; a crash at any step leaves the old or new file.

    ``durable`` False skips the fsyncs: a process crash still leaves the old or the new file,
    but a power loss may leave a damaged one, which its digest reveals on reading (for files
    that can be recomputed, such as a simulation's checkpoints).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    meta = dict(metadata or {})
    meta[CONTENT_KEY] = content_sha256(tensors, meta)
    save_file(dict(tensors), str(tmp), metadata=meta)
    if durable:
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if durable:
        _fsync_dir(path.parent)


def load_tensors_verified(path: Path | str) -> tuple[dict[str, Array], dict[str, str]]:
    """Every tensor and the metadata (without the digest) of a file, checked against its digest.

    ``CheckpointError`` names the file and what is wrong: missing, unreadable or cut off, or
    content that differs from the digest it was written with. A file written before files
    carried a digest is read unchecked.
    """
    try:
        with safe_open(str(path), "np") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {n: np.asarray(fh.get_tensor(n)) for n in fh.keys()}
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (SafetensorError, OSError, ValueError) as exc:
        why = f"cannot be read (cut off, or not safetensors): {exc}"
        raise CheckpointError(f"{path} {why}") from None
    recorded = meta.pop(CONTENT_KEY, None)
    if recorded is not None and content_sha256(tensors, meta) != recorded:
        raise CheckpointError(f"{path}: its content does not match the SHA-256 it was written with")
    return tensors, meta


def file_sha256(path: Path | str) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def remove_orphan_temps(folders: Iterable[Path]) -> list[Path]:
    """Delete the ``*.tmp`` files a crash left in ``folders``; return what was removed.

    Only for a process that owns these folders, at start-up: another writer's temp would go.
    """
    removed = []
    for folder in folders:
        for p in sorted(folder.glob("*.tmp")) if folder.is_dir() else []:
            if p.is_file() and not p.is_symlink():
                p.unlink()
                removed.append(p)
    return removed


def open_sqlite(path: Path, schema: str, recover: str) -> sqlite3.Connection:
    """A SQLite file in WAL mode with ``schema`` applied; a new file appears whole (temp, rename).

    An existing file that is empty, not SQLite or damaged raises ``StateFileError`` with what
    is wrong and ``recover``, how to get out of it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _create_sqlite(path, schema)
    with open(path, "rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    if not head:
        raise StateFileError(f"{path} is empty (0 bytes): {recover}")
    if head != SQLITE_MAGIC:
        raise StateFileError(f"{path} is not a SQLite database: {recover}")
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise StateFileError(f"{path} is damaged (SQLite quick_check: {verdict}): {recover}")
        db.executescript(schema)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise StateFileError(f"{path} cannot be read ({exc}): {recover}") from None
    except StateFileError:
        db.close()
        raise
    return db


def _create_sqlite(path: Path, schema: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(schema)
    finally:
        db.close()  # the last connection folds the WAL into the file and removes it
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
