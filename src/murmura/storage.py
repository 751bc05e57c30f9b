"""Crash-safe files: a write lands whole or not at all (temp file, fsync, rename, fsync dir)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import save_file


def save_tensors_atomically(
    path: Path,
    tensors: Mapping[str, NDArray[np.generic]],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` as a safetensors file; a crash at any step leaves the old or new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(dict(tensors), str(tmp), metadata=dict(metadata) if metadata else None)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
