"""Stopping a long-running command on SIGINT or SIGTERM: one defined path, then exit 0.

The first signal raises ``Interrupted`` (a ``BaseException``, like ``KeyboardInterrupt``, so
no ``except Exception`` swallows it): in a synchronous command (``murmura client``) at once in
the main thread (``raising_signals``); in an asyncio one (``murmura server``, ``peer``,
``edge``) by cancelling the command's task (``until_signalled``), whose ``finally`` blocks
then stop serving, close the state store and the links. The round in progress is abandoned:
nothing of it is recorded, and the last completed round's checkpoint is where the same
command resumes. A second signal during that clean-up exits at once (status 130).

Once the node has closed its state and said so, ``leave`` ends the process without the
interpreter's final garbage collection: after an interrupted round, gRPC's objects can hold
that up for half a minute (measured: 10-26 s on a loaded machine), with nothing left to save.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any, NoReturn, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
Handler = Callable[[int, FrameType | None], Any] | int | None


class Interrupted(BaseException):
    """The command was asked to stop by SIGINT or SIGTERM (``signame``)."""

    def __init__(self, signum: int) -> None:
        self.signame = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signame}")


def _exit_now(signum: int, _frame: FrameType | None = None) -> None:
    """The second signal: the clean-up is taking too long for the operator; leave now."""
    os.write(2, f"{signal.Signals(signum).name} again: exiting without clean-up\n".encode())
    os._exit(130)


def _raise(signum: int, _frame: FrameType | None) -> None:
    for sig in SIGNALS:
        signal.signal(sig, _exit_now)
    raise Interrupted(signum)


@contextlib.contextmanager
def raising_signals() -> Iterator[None]:
    """While inside: the first SIGINT or SIGTERM raises ``Interrupted`` in the main thread."""
    old: dict[int, Handler] = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        signal.signal(sig, _raise)
    try:
        yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)


async def until_signalled(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main``; the first SIGINT or SIGTERM cancels it and raises ``Interrupted``.

    ``main``'s clean-up (its ``finally`` blocks) runs before ``Interrupted`` is raised; a
    second signal exits at once. The signal handlers in place before are restored after.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    got: list[int] = []

    def on_signal(signum: int) -> None:
        if got:
            _exit_now(signum)
        got.append(signum)
        log.debug("node=- round=-: %s: stopping", signal.Signals(signum).name)
        task.cancel()

    old: dict[int, Handler] = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        loop.add_signal_handler(sig, on_signal, int(sig))
    try:
        return await task
    except asyncio.CancelledError:
        if got:
            raise Interrupted(got[0]) from None
        raise
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, old[sig] if old[sig] is not None else signal.SIG_DFL)


def leave(status: int = 0) -> NoReturn:
    """Flush the logs and standard streams, then exit with ``status`` at once."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
