"""One voice for every long-running command: lifecycle and progress lines, as text or JSON.

Library code announces what an operator should see with ``say`` (an ``event`` name, a line of
text, the node, run and round, and a few scalar fields); ``setup`` installs one handler on
the root logger that prints those lines, and ordinary warnings, either as text
(``HH:MM:SS node: text``) or, with ``--log-format json``, as one JSON object per line with
``time``, ``level``, ``node``, ``run``, ``round``, ``event``, ``message`` and the fields, for
log pipelines. Only what the caller names goes out: never a model, a key or a data row.
Records that are not events keep the ``node=X round=N:`` prefix convention of the code base;
the JSON form lifts them into the ``node`` and ``round`` keys.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TextIO

from rich.console import Console

if TYPE_CHECKING:
    from murmura.types import RoundMetrics

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
Field = str | int | float | bool | None
_KEY = "murmura_event"
_PREFIX = re.compile(r"^node=(?P<node>[^ :]+)(?: round=(?P<round>-?\d+|-))?: ?")


@dataclass(frozen=True, slots=True)
class Event:
    """What happened (``name``), to whom, when; ``fields`` are scalars safe to log."""

    name: str
    node: str
    round: int | None = None
    run: str | None = None
    fields: Mapping[str, Field] = field(default_factory=dict)


def say(
    log: logging.Logger,
    event: str,
    text: str,
    *,
    node: str,
    round_: int | None = None,
    run: str | None = None,
    level: int = logging.INFO,
    fields: Mapping[str, Field] | None = None,
    **more: Field,
) -> None:
    """Announce ``event`` to the operator: printed by ``setup``'s handler in either format.

    ``fields`` and ``more``: scalars for the JSON form (never a model, a key or data).
    """
    ev = Event(event, node, round_, run or None, {**(fields or {}), **more})
    log.log(level, "%s", text, extra={_KEY: ev})


def retrying(
    log: logging.Logger, node: str, what: str, target: str, delay: float, k: int, **fields: Field
) -> None:
    """``what`` at ``target`` did not answer; ``node`` tries again in ``delay`` s (attempt k)."""
    text = f"{what} at {target} not reachable; retrying in {delay:.1f} s (attempt {k})"
    say(
        log, "retry", text, node=node, level=logging.WARNING,
        fields=fields, target=target, delay=round(delay, 3), attempt=k,
    )  # fmt: skip


def fmt(value: float | None, spec: str = ".4f") -> str:
    """``value`` formatted, or ``-`` when there is none."""
    return "-" if value is None else format(value, spec)


def round_status(m: RoundMetrics) -> str:
    """A round's figures as ``murmura run`` shows them: participants, failures, loss, accuracy."""
    failed = f" failures {len(m.failures)}" if m.failures else ""
    text = (
        f"participants {m.participants}{failed} train loss {fmt(m.train_loss)} "
        f"test acc {fmt(m.test_accuracy)}"
    )
    if m.federated_clients is not None:
        text += f" federated acc {fmt(m.federated_accuracy)}"
    eps = m.extra.get("epsilon")
    if isinstance(eps, int | float):
        text += f" epsilon {eps:.3g}"
    asr = m.extra.get("attack_success_rate")  # a backdoor's, next to the accuracy
    if isinstance(asr, int | float):
        text += f" attack success {asr:.4f}"
    return text


def round_fields(m: RoundMetrics) -> dict[str, Field]:
    """A round's figures as log fields (the JSON form of ``round_status``)."""
    out: dict[str, Field] = {
        "participants": m.participants,
        "failures": len(m.failures),
        "train_loss": m.train_loss,
        "test_loss": m.test_loss,
        "test_accuracy": m.test_accuracy,
        "seconds": round(m.seconds, 3),
    }
    if m.federated_clients is not None:
        out["federated_accuracy"] = m.federated_accuracy
        out["federated_clients"] = m.federated_clients
    for key in ("epsilon", "delta", "consensus_distance"):
        value = m.extra.get(key)
        if isinstance(value, int | float):
            out[key] = value
    return out


def _split(record: logging.LogRecord) -> tuple[Event, str]:
    """The event of ``record``, or one made from a plain record's ``node=X round=N:`` prefix."""
    ev = getattr(record, _KEY, None)
    message = record.getMessage()
    if isinstance(ev, Event):
        return ev, message
    m = _PREFIX.match(message)
    if m is None:
        return Event("log", record.name.rsplit(".", 1)[-1]), message
    r = m.group("round")
    round_ = int(r) if r is not None and r != "-" else None
    return Event("log", m.group("node"), round_), message[m.end() :]


def _finite(value: Field) -> Field:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def json_line(record: logging.LogRecord) -> str:
    """``record`` as one JSON object: time, level, node, run, round, event, message, fields."""
    ev, message = _split(record)
    out: dict[str, Field] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "node": ev.node,
        "run": ev.run,
        "round": ev.round,
        "event": ev.name,
        "message": message,
    }
    for key, value in ev.fields.items():
        out.setdefault(key, _finite(value))
    return json.dumps(out, allow_nan=False)


def text_line(record: logging.LogRecord) -> str:
    """``record`` as ``HH:MM:SS node: text``; a plain record shows its level when not info."""
    ev, message = _split(record)
    stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
    where = ev.node if ev.round is None or ev.name != "log" else f"{ev.node} round {ev.round}"
    level = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
    return f"{stamp} {where}: {level}{message}"


class ConsoleHandler(logging.Handler):
    """Prints events (INFO and up) and other records from ``threshold`` up, in one format."""

    def __init__(
        self, log_format: LogFormat, threshold: int, stream: TextIO | Console | None = None
    ) -> None:
        super().__init__(logging.INFO)
        self.log_format, self.threshold = log_format, threshold
        self.console = stream if isinstance(stream, Console) else None
        self.stream = None if isinstance(stream, Console) else stream

    def filter(self, record: logging.LogRecord) -> bool:
        """Events from INFO, other records from ``threshold``."""
        floor = logging.INFO if hasattr(record, _KEY) else self.threshold
        return record.levelno >= floor and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record`` as one line (above a live progress bar when given a rich Console)."""
        try:
            line = json_line(record) if self.log_format == "json" else text_line(record)
            if self.console is not None and self.log_format == "text":
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)
                return
            stream = self.stream or sys.stdout
            stream.write(line + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


_threshold = logging.WARNING


def setup(
    log_format: LogFormat = "text",
    verbose: bool | None = None,
    stream: TextIO | Console | None = None,
) -> None:
    """Print through one ``ConsoleHandler`` on the root logger; ``verbose``: every INFO record.

    ``verbose`` None keeps the choice of an earlier call (``murmura -v`` then a command's
    ``--log-format``).
    """
    global _threshold
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
    if verbose is not None:
        _threshold = logging.INFO if verbose else logging.WARNING
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(ConsoleHandler(log_format, _threshold, stream))
    root.setLevel(logging.INFO)
