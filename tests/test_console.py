"""The console's two formats: text lines for a terminal, one JSON object per line for pipelines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura import console
from murmura.types import Failure, RoundMetrics

log = logging.getLogger("murmura.test_console")


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """What the root logger prints, through ``console.setup``; the old handlers come back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buf = io.StringIO()
    yield buf
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_text_shows_events_and_warnings_but_not_plain_info(out: io.StringIO) -> None:
    console.setup("text", verbose=False, stream=out)
    console.say(log, "listening", "listening on 127.0.0.1:5", node="coordinator", run="r-1")
    log.info("node=w0 round=3: result delivered")  # detail: only with -v
    log.warning("node=w0 round=3: result refused: late")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].endswith(" coordinator: listening on 127.0.0.1:5")
    assert lines[1].endswith(" w0 round 3: warning: result refused: late")


def test_verbose_text_shows_plain_info_too(out: io.StringIO) -> None:
    console.setup("text", verbose=True, stream=out)
    log.info("node=w0 round=3: result delivered")
    log.debug("node=w0 round=3: never")
    assert out.getvalue().splitlines()[0].endswith(" w0 round 3: result delivered")
    console.setup("json", stream=out)  # None keeps verbose from before
    log.info("node=w0 round=4: result delivered")
    assert json.loads(out.getvalue().splitlines()[-1])["round"] == 4


def test_json_carries_node_run_round_event_and_fields(out: io.StringIO) -> None:
    console.setup("json", verbose=False, stream=out)
    m = RoundMetrics(7, 3, [Failure("w2", "lost")], train_loss=0.25, test_accuracy=0.9)
    m.extra["epsilon"] = 1.5
    console.say(log, "round", "round 7/10", node="coordinator", run="r-1", round_=7,
                fields=console.round_fields(m))  # fmt: skip
    log.warning("node=w1 round=-: link error UNAVAILABLE")
    log.error("no prefix here")
    first, second, third = (json.loads(x) for x in out.getvalue().splitlines())
    assert first["time"].endswith("Z") and first["level"] == "info"
    assert (first["node"], first["run"], first["round"], first["event"]) == (
        "coordinator", "r-1", 7, "round"
    )  # fmt: skip
    assert (first["participants"], first["failures"], first["epsilon"]) == (3, 1, 1.5)
    assert first["test_accuracy"] == 0.9 and first["message"] == "round 7/10"
    assert (second["node"], second["round"], second["event"]) == ("w1", None, "log")
    assert second["level"] == "warning" and second["message"] == "link error UNAVAILABLE"
    assert (third["node"], third["message"]) == ("test_console", "no prefix here")


def test_round_status_reads_like_murmura_run() -> None:
    m = RoundMetrics(2, 3, [Failure("w2", "lost")], train_loss=0.12345, test_accuracy=None)
    assert console.round_status(m) == "participants 3 failures 1 train loss 0.1235 test acc -"
    m.extra["epsilon"] = 2.345678
    assert console.round_status(m).endswith(" epsilon 2.35")


@settings(max_examples=40)
@given(
    text=st.text(),
    value=st.one_of(st.floats(), st.integers(), st.text(), st.booleans(), st.none()),
)
def test_any_message_and_field_is_one_json_line(text: str, value: console.Field) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", (text,), None)
    record.murmura_event = console.Event("e", "n", 1, "r", {"v": value})
    line = console.json_line(record)
    assert "\n" not in line
    got = json.loads(line)
    assert got["message"] == text
    if isinstance(value, float) and value != value:
        assert got["v"] == "nan"
    elif isinstance(value, float) and abs(value) == float("inf"):
        assert got["v"] in ("inf", "-inf")
    else:
        assert got["v"] == value


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format 'xml'"):
        console.setup("xml")  # type: ignore[arg-type]
