"""What every deployed role tells its operator: start-up, waiting, rounds, retries, the end.

One function per moment of a node's life, shared by ``murmura server``, ``client``, ``peer``
and ``edge`` so that they speak the same way; each prints one line through
``murmura.console`` (text, or one JSON object with ``--log-format json``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from murmura.console import Field, fmt, round_fields, round_status, say
from murmura.types import RoundMetrics

log = logging.getLogger("murmura.progress")


def listening(node: str, address: str, tls: bool, run: str | None = None) -> None:
    """The node serves at ``address``."""
    how = "mutual TLS" if tls else "INSECURE, no TLS"
    say(log, "listening", f"listening on {address} ({how})", node=node, run=run, address=address)


def metrics_at(node: str, url: str) -> None:
    """Prometheus metrics are served at ``url``."""
    say(log, "metrics", f"metrics on {url}", node=node, url=url)


def run_opened(node: str, run: str, done: int, rounds: int, resumed: bool) -> None:
    """A run is started, or resumed after round ``done``."""
    if resumed:
        text = f"resumed run {run} at round {done} of {rounds}"
    else:
        text = f"started run {run} ({rounds} rounds)"
    event = "resumed" if resumed else "started"
    say(log, event, text, node=node, run=run, round_=done, rounds=rounds)


def waiting(node: str, run: str, round_: int, want: int, joined: int, what: str) -> None:
    """The node waits for ``want`` ``what`` (workers, children) of which ``joined`` are in."""
    noun = what.removesuffix("s") if want == 1 else what
    text = f"waiting for {want} {noun} ({joined} joined)"
    say(log, "waiting", text, node=node, run=run, round_=round_, want=want, joined=joined)


def round_done(node: str, run: str, m: RoundMetrics, rounds: int | None) -> None:
    """A coordinator's (or edge's) round line: as ``murmura run``'s, with the round count."""
    text = f"round {m.round}{'' if rounds is None else f'/{rounds}'}: {round_status(m)}"
    say(log, "round", text, node=node, run=run, round_=m.round, fields=round_fields(m))


def peer_round(node: str, run: str, line: Mapping[str, object], rounds: int, of: int) -> None:
    """A peer's round line: neighbours mixed, loss, accuracy, consensus distance, epsilon."""
    got = line.get("neighbours")
    mixed = len(got) if isinstance(got, list) else 0
    fields: dict[str, Field] = {"neighbours": mixed, "of": of}
    text = f"round {line['round']}/{rounds}: mixed with {mixed} of {of} neighbours"
    for key, label in (
        ("train_loss", "train loss"),
        ("test_accuracy", "test acc"),
        ("local_consensus_distance", "local consensus distance"),
        ("epsilon", "epsilon"),
    ):
        value = line.get(key)
        if isinstance(value, int | float):
            fields[key] = value
            text += f" {label} {fmt(float(value), '.4g' if key != 'test_accuracy' else '.4f')}"
    r = line["round"]
    round_ = r if isinstance(r, int) else None
    say(log, "round", text, node=node, run=run, round_=round_, fields=fields)


def connected(node: str, target: str, run: str, round_: int) -> None:
    """The node joined (or rejoined) the run of the coordinator or edge at ``target``."""
    text = f"joined run {run} at {target} (round {round_})"
    say(log, "joined", text, node=node, run=run, round_=round_, target=target)


def finished(node: str, run: str | None, text: str, round_: int, **fields: Field) -> None:
    """The node's work is done: its final line."""
    say(log, "finished", text, node=node, run=run, round_=round_, fields=fields)


def privacy_spent(node: str, run: str | None, epsilon: object, delta: object) -> None:
    """The privacy budget a DP run spent, at its end."""
    if not isinstance(epsilon, int | float):
        return
    d = delta if isinstance(delta, int | float) else None
    text = f"privacy spent: epsilon {epsilon:.4g} at delta {fmt(d, '.3g')}"
    say(log, "privacy", text, node=node, run=run, epsilon=epsilon, delta=d)


def interrupted(node: str, run: str | None, round_: int, signame: str) -> None:
    """The node stopped on a signal; the same command resumes after ``round_``."""
    text = f"interrupted at round {round_}; run the same command to resume"
    say(log, "interrupted", text, node=node, run=run, round_=round_, signal=signame)
