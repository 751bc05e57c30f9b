"""The coordinator's secure aggregation exchange: binding, duplicates, deadlines (no network)."""

from __future__ import annotations

import asyncio
import time

import pytest

from murmura.transport.hub import Refused
from murmura.transport.secagg_exchange import DEFAULT_ANSWER_BYTES, FetchStatus, SecAggExchange

MEMBERS = frozenset({"a", "b", "c"})


def _code(exc: pytest.ExceptionInfo[Refused]) -> str:
    return exc.value.code


def test_requests_are_bound_to_run_round_node_and_step() -> None:
    async def body() -> None:
        got: list[tuple[str, int, bytes]] = []
        ex = SecAggExchange("run-1")
        await ex.begin(3, MEMBERS, lambda n, s, p: got.append((n, s, p)))
        assert (await ex.fetch("a", "run-1", 3, 1, 0.05)).status == FetchStatus.WAIT
        await ex.open_step(1, {"a": b"req-a", "b": b"req-b"})
        assert (await ex.fetch("a", "run-1", 3, 1, 0)).payload == b"req-a"
        assert (await ex.fetch("c", "run-1", 3, 1, 0)).status == FetchStatus.LEFT
        assert (await ex.fetch("a", "run-1", 2, 1, 0)).status == FetchStatus.ENDED
        with pytest.raises(Refused) as e:
            await ex.submit("a", "run-0", 3, 1, b"x")
        assert _code(e) == "FAILED_PRECONDITION"
        with pytest.raises(Refused) as e:
            await ex.fetch("z", "run-1", 3, 1, 0)
        assert _code(e) == "PERMISSION_DENIED"
        for node, round_, step in (("a", 4, 1), ("a", 3, 2), ("c", 3, 1)):
            with pytest.raises(Refused) as e:
                await ex.submit(node, "run-1", round_, step, b"x")
            assert _code(e) == "FAILED_PRECONDITION"
        assert await ex.submit("a", "run-1", 3, 1, b"ans") is False
        assert await ex.submit("a", "run-1", 3, 1, b"ans") is True  # a retry: counted once
        with pytest.raises(Refused) as e:
            await ex.submit("a", "run-1", 3, 1, b"other")
        assert _code(e) == "ALREADY_EXISTS"
        assert got == [("a", 1, b"ans")]

    asyncio.run(body())


def test_a_step_closes_at_its_deadline_and_late_answers_are_dropouts() -> None:
    async def body() -> None:
        ex = SecAggExchange("run-1")
        await ex.begin(3, MEMBERS, lambda n, s, p: None)
        await ex.open_step(1, {"a": b"", "b": b"", "c": b""})
        await ex.submit("a", "run-1", 3, 1, b"x")
        t0 = time.monotonic()
        missing = await ex.wait_step(1, 0.3, lambda: ["a", "b", "c"])
        assert 0.25 <= time.monotonic() - t0 < 2
        assert missing == {"b", "c"}
        with pytest.raises(Refused) as e:
            await ex.submit("b", "run-1", 3, 1, b"late")
        assert _code(e) == "FAILED_PRECONDITION"
        assert (await ex.fetch("b", "run-1", 3, 1, 0)).status == FetchStatus.LEFT
        await ex.end("aborted: test")
        got = await ex.fetch("b", "run-1", 3, 2, 0)
        assert got.status == FetchStatus.ENDED and got.reason == "aborted: test"

    asyncio.run(body())


def test_rejected_answers_and_lost_nodes_do_not_hold_a_step_open() -> None:
    async def body() -> None:
        def receiver(node: str, step: int, payload: bytes) -> None:
            if payload == b"bad":
                raise Refused("INVALID_ARGUMENT", "malformed")

        ex = SecAggExchange("run-1")
        await ex.begin(3, MEMBERS, receiver)
        await ex.open_step(1, {"a": b"", "b": b"", "c": b""})
        await ex.submit("a", "run-1", 3, 1, b"ok")
        with pytest.raises(Refused):
            await ex.submit("b", "run-1", 3, 1, b"bad")
        with pytest.raises(Refused) as e:
            await ex.submit("b", "run-1", 3, 1, b"ok")  # no second chance
        assert _code(e) == "ALREADY_EXISTS"
        t0 = time.monotonic()
        missing = await ex.wait_step(1, 30, lambda: ["a", "b"])  # c is lost
        assert time.monotonic() - t0 < 2
        assert missing == {"c"}
        assert ex.refusals(1) == {"b": "malformed"}

    asyncio.run(body())


def test_a_transport_refusal_counts_as_the_answer_and_the_limit_is_the_rounds() -> None:
    async def body() -> None:
        got: list[str] = []
        ex = SecAggExchange("run-1")
        assert ex.max_answer_bytes == DEFAULT_ANSWER_BYTES
        await ex.begin(3, MEMBERS, lambda n, s, p: got.append(n), max_answer_bytes=1234)
        assert ex.max_answer_bytes == 1234
        await ex.open_step(4, {"a": b"", "b": b"", "c": b""})
        ex.admit("a", "run-1", 3, 4)
        for args, code in (
            (("a", "run-0", 3, 4), "FAILED_PRECONDITION"),
            (("a", "run-1", 2, 4), "FAILED_PRECONDITION"),
            (("a", "run-1", 3, 5), "FAILED_PRECONDITION"),
            (("z", "run-1", 3, 4), "PERMISSION_DENIED"),
        ):
            with pytest.raises(Refused) as e:
                ex.admit(*args)
            assert _code(e) == code
        await ex.reject("a", 3, 4, "DigestMismatch: bad")
        await ex.reject("a", 3, 4, "a second reason is not kept")
        await ex.reject("b", 2, 4, "another round: ignored")
        await ex.submit("b", "run-1", 3, 4, b"ok")
        await ex.reject("b", 3, 4, "already counted: ignored")
        with pytest.raises(Refused) as e:
            await ex.submit("a", "run-1", 3, 4, b"ok")  # no second try after a refusal
        assert _code(e) == "ALREADY_EXISTS"
        assert ex.refusals(4) == {"a": "DigestMismatch: bad"}
        assert await ex.wait_step(4, 30, lambda: ["a", "b"]) == {"c"}  # c is lost
        assert got == ["b"]
        assert ex.refusals(5) == {}

    asyncio.run(body())
