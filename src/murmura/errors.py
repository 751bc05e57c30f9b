"""Exceptions murmura raises; each names what went wrong so a user can act on it."""

from __future__ import annotations


class MurmuraError(Exception):
    """Base class of every murmura error."""


class ConfigError(MurmuraError, ValueError):
    """A configuration file, key or value is invalid."""


class RegistryError(MurmuraError, KeyError):
    """A plug-in name is not registered; the message lists the valid names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UpdateRejected(MurmuraError):
    """A client's update failed validation and was left out of aggregation."""

    def __init__(self, node: str, round_: int, reason: str) -> None:
        super().__init__(f"update from node {node!r} in round {round_} rejected: {reason}")
        self.node = node
        self.round = round_
        self.reason = reason


class AggregationError(MurmuraError, ValueError):
    """An aggregation rule got parameters it cannot work with (f too large, beta >= 0.5, ...)."""


class ProtocolError(MurmuraError):
    """A message on the wire is malformed, of an unknown kind or version, or out of place."""


class CheckpointError(MurmuraError, ValueError):
    """A checkpoint cannot be read back, or does not belong to the run that loads it."""


class AuditError(MurmuraError):
    """The audit ledger cannot be opened or written: a missing or foreign key, a bad file."""


class SignatureError(ProtocolError):
    """An update's author signature is missing, malformed, or does not verify with its cert."""


class StateFileError(MurmuraError):
    """A state file (state.sqlite, audit.sqlite) is empty, unreadable or missing next to a run."""


class InstructionRejected(MurmuraError, ValueError):
    """An instruction from a parent (model or hyper-parameters) fails the worker's checks."""


class RejoinTimeout(MurmuraError):
    """No round could be sampled for ``rejoin_timeout`` seconds: too few live nodes.

    The run is left unfinished, so a restarted coordinator resumes it.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        """Why the round could not be sampled (no live nodes, fewer than min_clients)."""


class IdentityError(MurmuraError):
    """The node at a dialled address holds a certificate of another role or name than needed."""


class SchemaError(MurmuraError, ValueError):
    """A site's data does not fit the job's schema; names the site, file, column and row.

    ``value`` is the offending value, shown locally; ``public()`` is the same message without
    it and with the file's name only, fit for leaving the site (names and counts, no data).
    """

    def __init__(
        self,
        site: str,
        file: str,
        column: str | None,
        row: int | None,
        problem: str,
        value: object = None,
    ) -> None:
        self.site, self.file, self.column, self.row = site, file, column, row
        self.problem, self.value = problem, value
        shown = problem if value is None else f"{str(value)[:40]!r} {problem}"
        super().__init__(f"{self._where(file)}: {shown}")

    def _where(self, file: str) -> str:
        where = f"site {self.site}: {file}"
        if self.column is not None:
            where += f": column {self.column!r}"
        if self.row is not None:
            where += f", row {self.row}"
        return where

    def public(self) -> str:
        """The message without the value, naming the file but not its folder."""
        name = self.file.replace("\\", "/").rsplit("/", 1)[-1]
        shown = self.problem if self.value is None else f"a value {self.problem}"
        return f"{self._where(name)}: {shown}"


class TrackingError(MurmuraError):
    """The tracking store or the model registry could not be reached or refused a request."""


class LineageError(MurmuraError):
    """A registered model's weights or history differ from its recorded lineage."""
