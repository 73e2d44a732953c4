"""Structured logs: JSON and text lines, numbers masked as a last line of defence, one record per decision."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from gatekeeper.config import Settings
from gatekeeper.core.model import Reason, Verdict
from gatekeeper.logs import (
    DECISIONS_LOGGER,
    DecisionLogger,
    LogCounter,
    NumberMasker,
    configure,
    default_format,
    mask_numbers,
)
from gatekeeper.metrics import Metrics
from gatekeeper.record import DecisionRecord, new_decision_id
from tests.conftest import make_record, make_settings

log = logging.getLogger("gatekeeper.fastagi.server")


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("call to +31612345678 failed", "call to +31*******78 failed"),
        ("+31 6 1234 5678", "+31*******78"),
        ("+31 (0)6-12345678", "+31********78"),
        ("+33 6 12 34 56 78", "+33*******78"),
        ("0031612345678", "00*********78"),
        ("06-12345678", "06******78"),
        ("(0612345678)", "(06******78)"),
        ("agi://gk/check?campaign=x&number=0612345678&y=1", "agi://gk/check?campaign=x&number=06******78&y=1"),
        ("dialled 612345678", "dialled 61*****78"),
        ("tel:+31612345678;ext=1", "tel:+31*******78;ext=1"),
        ("two: 0612345678 and +4915112345678", "two: 06******78 and +49*********78"),
    ],
)
def test_numbers_are_masked(text: str, masked: str) -> None:
    assert mask_numbers(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "uniqueid 1795860072.69",  # Asterisk call ids stay readable for correlation with the PBX
        "stream entry 1795866255888-0",
        "decision 01JABCD0123456789XYZ0ABCDE",
        "hash 0a1b2c3d4e5f67890123456789abcdef",
        "number +31 6 ****5678",  # masked already
        "latency 0.000123456 s",
        "at 2026-11-28T11:44:15.121604+00:00",
        "listening on 10.0.0.12:4573 and [::1]:8080",
        "port 65535, 12345 rows, 4096 tags",
    ],
)
def test_what_is_not_a_number_is_left_alone(text: str) -> None:
    assert mask_numbers(text) == text


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """The root logger configured for the test (pytest's own capture handler stays), then restored."""
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = configure("json", "debug", stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message_and_extras(output: io.StringIO) -> None:
    log.warning(
        "session from %s for %s failed", "10.0.0.7", "+31612345678",
        extra={"campaign": "acme-sales", "uniqueid": "1795860072.69", "dialled": "0612345678", "attempt": 2},
    )  # fmt: skip
    (entry,) = lines(output)
    assert set(entry) == {"time", "level", "logger", "message", "campaign", "uniqueid", "dialled", "attempt"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(entry["time"]))
    assert entry["level"] == "warning" and entry["logger"] == "gatekeeper.fastagi.server"
    assert entry["message"] == "session from 10.0.0.7 for +31*******78 failed"
    assert entry["dialled"] == "06******78" and entry["uniqueid"] == "1795860072.69" and entry["attempt"] == 2


def test_tracebacks_are_masked(output: io.StringIO) -> None:
    try:
        raise ValueError("no route to +31612345678")
    except ValueError:
        log.exception("lookup failed")
    (entry,) = lines(output)
    assert entry["message"] == "lookup failed"
    assert "ValueError: no route to +31*******78" in str(entry["exception"])
    assert "612345678" not in output.getvalue()


def test_text_lines_for_a_terminal() -> None:
    root = logging.getLogger()
    level, stream = root.level, io.StringIO()
    handler = configure("text", "info", stream=stream)
    try:
        log.info("refused %s", "0612345678", extra={"campaign": "acme sales"})
        log.debug("not shown at info")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    (line,) = stream.getvalue().splitlines()
    assert re.fullmatch(r'\S+Z INFO gatekeeper\.fastagi\.server: refused 06\*{6}78 campaign="acme sales"', line), line


def test_configure_replaces_its_own_handler_and_validates() -> None:
    root = logging.getLogger()
    level, before = root.level, list(root.handlers)
    try:
        configure("json", "warning", stream=io.StringIO())
        second = configure("text", "info", stream=io.StringIO())
        added = [h for h in root.handlers if h not in before]
        assert added == [second]
        assert root.level == logging.INFO
        with pytest.raises(ValueError, match="log format"):
            configure("xml", "info")
        with pytest.raises(ValueError, match="log level"):
            configure("json", "verbose")
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
        root.setLevel(level)


def test_default_format_is_text_on_a_terminal_and_json_otherwise() -> None:
    assert default_format(io.StringIO()) == "json"
    primary, secondary = os.openpty()
    with open(secondary, "w") as tty:  # a file descriptor, not a path
        assert default_format(tty) == "text"
    os.close(primary)


def test_the_masker_runs_once_per_record() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a %s", ("+31612345678",), None)
    masker = NumberMasker()
    assert masker.filter(record) and masker.filter(record)
    assert record.getMessage() == "a +31*******78"


def test_unformattable_arguments_do_not_raise() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a %s %s", ("0612345678",), None)
    assert NumberMasker().filter(record)
    assert "0612345678" not in record.getMessage()


# -- the decision listener -----------------------------------------------------------------------------


@pytest.fixture
def settings() -> Settings:
    return make_settings("redis://127.0.0.1:1/0")


def decision(settings: Settings, verdict: Verdict, reason: Reason, *, would_block: bool = False) -> DecisionRecord:
    return make_record(
        decision_id=new_decision_id(1.0),
        verdict=verdict,
        reason=reason,
        would_block=would_block,
        explanation="explanation for 0612345678",
        uniqueid="1795860072.69",
        generation=3,
        latency_us=412,
    )


def test_one_structured_record_per_decision(output: io.StringIO, settings: Settings) -> None:
    listener = DecisionLogger()
    blocked = decision(settings, Verdict.BLOCK, Reason.OBJECTION)
    listener(blocked)
    (entry,) = lines(output)
    assert entry["level"] == "info" and entry["logger"] == DECISIONS_LOGGER
    expected = f"BLOCK objection: campaign acme-sales, number +31 6 ****5678 (decision {blocked.decision_id}, 412 µs)"
    assert entry["message"] == expected
    assert {k: entry[k] for k in ("decision_id", "campaign", "tenant", "number_masked", "verdict", "reason")} == {
        "decision_id": blocked.decision_id,
        "campaign": "acme-sales",
        "tenant": "acme",
        "number_masked": "+31 6 ****5678",
        "verdict": "block",
        "reason": "objection",
    }
    assert entry["latency_us"] == 412 and entry["generation"] == 3 and entry["index_error"] is None
    assert "612345678" not in output.getvalue()


def test_allows_are_debug_and_blocks_info(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    listener = DecisionLogger()
    with caplog.at_level(logging.INFO, logger=DECISIONS_LOGGER):
        listener(decision(settings, Verdict.ALLOW, Reason.CONSENT))
        listener(decision(settings, Verdict.ALLOW, Reason.NO_BASIS, would_block=True))  # monitor mode
        listener(decision(settings, Verdict.BLOCK, Reason.INDEX_UNAVAILABLE))
    assert [(r.levelno, r.getMessage().split(":")[0]) for r in caplog.records] == [
        (logging.INFO, "ALLOW no-basis"),
        (logging.INFO, "BLOCK index-unavailable"),
    ]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=DECISIONS_LOGGER):
        listener(decision(settings, Verdict.ALLOW, Reason.CONSENT))
    assert [(r.levelno, r.getMessage().split(":")[0]) for r in caplog.records] == [(logging.DEBUG, "ALLOW consent")]


def test_warnings_and_errors_are_counted(settings: Settings) -> None:
    metrics = Metrics(settings, CollectorRegistry())
    counter = LogCounter.install(metrics)
    try:
        logging.getLogger("gatekeeper.fastagi.server").warning("slow Asterisk")
        logging.getLogger("gatekeeper.index.store").info("not counted")
        logging.getLogger("aiohttp.server").error("handler failed")
    finally:
        counter.remove()
    logging.getLogger("gatekeeper.fastagi.server").warning("after removal: not counted")
    get = metrics.registry.get_sample_value
    assert get("gatekeeper_log_messages_total", {"level": "warning", "logger": "fastagi"}) == 1
    assert get("gatekeeper_log_messages_total", {"level": "error", "logger": "other"}) == 1
    assert get("gatekeeper_log_messages_total", {"level": "warning", "logger": "index"}) == 0


def test_the_service_writes_lines_in_batches_but_warnings_at_once() -> None:
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = configure("json", "info", stream=stream, batched=True)
    try:
        log.info("a blocked call")
        log.info("another")
        assert stream.getvalue() == ""  # waiting for the next batch
        log.warning("Redis unreachable")  # written at once, after the lines before it
        assert [entry["message"] for entry in lines(stream)] == ["a blocked call", "another", "Redis unreachable"]
        log.info("later")
        deadline = time.monotonic() + 5
        while "later" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lines(stream)[-1]["message"] == "later"  # the flusher wrote it within FLUSH_INTERVAL
        log.info("at the end")
    finally:
        root.removeHandler(handler)
        handler.close()  # a stop writes what is waiting
        root.setLevel(level)
    assert lines(stream)[-1]["message"] == "at the end"
