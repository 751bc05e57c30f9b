"""What the ``tabular`` and ``image`` tasks share: data from files, described by a schema.

Such a task reads its data through ``murmura.data.sources`` and checks it against its schema
(``murmura.data.validate``) the same way in simulation and at a deployed site: with
``[partition] kind = "files"`` each file or sub-folder of ``partition.path`` is one client;
with another partitioner the one file ``task.args.data`` is split. ``task.args.test`` names
an optional central test set (without it there is none, so ``evaluation.central`` must be off
and ``evaluation.federated`` on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from murmura.data.federated import ArrayFederatedDataset
from murmura.data.partition import partition
from murmura.data.schema import Schema, schema_from_mapping
from murmura.data.sources import open_sources, site_entries
from murmura.data.validate import LocalData, read_local
from murmura.errors import ConfigError


class FileTask:
    """Base of a task whose data is a site's own files, described by ``schema``."""

    name = "files"

    def __init__(
        self, schema: Mapping[str, Any], data: str | None = None, test: str | None = None
    ) -> None:
        self.schema: Schema = schema_from_mapping(schema)
        self.data, self.test = data, test

    @property
    def regression(self) -> bool:
        """True when the task predicts a real value."""
        return bool(getattr(self.schema, "regression", False))

    def load(
        self,
        path: Path | str,
        site: str,
        loader: str | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> LocalData:
        """One site's data at ``path``, checked against the schema and prepared."""
        local = read_local(self.schema, open_sources(path, self.schema.kind, loader, args), site)
        return self.prepare(local)

    def prepare(self, local: LocalData) -> LocalData:
        """What the task does to checked data before training (none here)."""
        return local

    def federate(
        self, num_clients: int, partitioner: str, partition_args: dict[str, Any], seed: int
    ) -> ArrayFederatedDataset:
        """One client per file or folder (``files``), else ``data`` split by the partitioner."""
        if partitioner == "files":
            sites = self._sites(Path(str(partition_args.get("path"))), num_clients)
            parts = _consecutive([len(s) for s in sites])
        else:
            if self.data is None:
                raise ConfigError(
                    f"task {self.name!r}: partition.kind = {partitioner!r} splits one file, named "
                    "by task.args.data; or use partition.kind = 'files'"
                )
            whole = self.load(self.data, "data")
            sites = [whole]
            parts = partition(partitioner, whole.y, num_clients, seed, **partition_args)
        x = np.concatenate([s.x for s in sites])
        y = np.concatenate([s.y for s in sites])
        test = self.load(self.test, "test") if self.test else None
        x_te = test.x if test else np.empty((0, *x.shape[1:]), np.float32)
        y_te = test.y if test else np.empty(0, y.dtype)
        return ArrayFederatedDataset(x, y, parts, x_te, y_te)

    def _sites(self, path: Path, num_clients: int) -> list[LocalData]:
        entries = site_entries(path, self.schema.kind)
        if len(entries) != num_clients:
            raise ConfigError(
                f"partition.path {path} holds {len(entries)} client files or folders "
                f"({', '.join(e.name for e in entries[:5])}{', ...' if len(entries) > 5 else ''})"
                f" but partition.num_clients = {num_clients}"
            )
        return [self.load(e, e.stem) for e in entries]


def _consecutive(sizes: Sequence[int]) -> list[NDArray[np.int64]]:
    """Index ranges of consecutive blocks of ``sizes`` rows."""
    ends = np.cumsum(sizes)
    return [np.arange(e - n, e, dtype=np.int64) for n, e in zip(sizes, ends, strict=True)]
