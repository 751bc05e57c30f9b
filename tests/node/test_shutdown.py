"""A signal stops a command on one defined path: clean-up first, then ``Interrupted``."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from murmura.node.shutdown import Interrupted, raising_signals, until_signalled


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_cancels_the_task_then_raises_interrupted(sig: signal.Signals) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    cleaned: list[str] = []

    async def work() -> str:
        try:
            os.kill(os.getpid(), sig)
            await asyncio.sleep(30)
            return "finished"
        finally:
            await asyncio.sleep(0)  # clean-up may still await (stop a server)
            cleaned.append("finally")

    t0 = time.monotonic()
    with pytest.raises(Interrupted) as got:
        asyncio.run(until_signalled(work()))
    assert time.monotonic() - t0 < 5 and cleaned == ["finally"]
    assert got.value.signame == sig.name
    assert {s: signal.getsignal(s) for s in before} == before  # handlers restored


def test_without_a_signal_the_result_comes_back() -> None:
    async def work() -> int:
        return 7

    assert asyncio.run(until_signalled(work())) == 7


def test_a_synchronous_command_gets_interrupted_in_the_main_thread() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="SIGTERM"), raising_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # a blocking call is cut short
    assert signal.getsignal(signal.SIGTERM) == before
