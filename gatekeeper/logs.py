"""Structured logging for the entry points: one JSON object (or one text line) per record, numbers masked.

`configure(format, level)` is called once by the command line; library code only ever does
`logging.getLogger(__name__)`. What it installs on the root logger:

- a handler writing to stderr with `JsonFormatter` (`{"time", "level", "logger", "message", ...extra}`,
  one object per line, for journald, containers and log shippers) or `TextFormatter` (for a terminal);
- `NumberMasker`, a filter that masks anything that looks like a telephone number in the message, in the
  extra fields and in tracebacks. Code never logs a number on purpose (it logs `masked_number`); the
  filter is the last line of defence against a number that slipped into an exception text or a URL.

Also here: `DecisionLogger`, the gate listener that logs one structured record per decision, and
`LogCounter`, a handler that counts warnings and errors in `gatekeeper_log_messages_total`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import re
import sys
import threading
from typing import Any, Final, TextIO

import orjson

from gatekeeper.core.model import Verdict
from gatekeeper.metrics import Metrics
from gatekeeper.record import DecisionRecord

FORMATS: Final = ("text", "json")
LEVELS: Final = ("debug", "info", "warning", "error")
DECISIONS_LOGGER: Final = "gatekeeper.gate.decisions"
FLUSH_INTERVAL: Final = 0.2  # seconds a batched line may wait before it is written
BATCH_BYTES: Final = 64 * 1024  # a batch this large is written at once

# What a telephone number looks like in free text, as a last line of defence (over-masking is fine):
# - international: `+` or `00`, then 8-15 digits, optionally split by spaces, dashes, slashes, dots or
#   brackets (`+31 6 1234 5678`, `+31 (0)6-12345678`, `0031612345678`);
# - national: a trunk `0` and 8-14 more digits, split by spaces, dashes or slashes (`06-12345678`);
# - bare runs of 9-15 digits (a national number without its trunk prefix, `612345678`), except the
#   integer part of a decimal or of a Redis stream id (`1795860072.69` is an Asterisk uniqueid, not a
#   number; it stays readable for correlating with the PBX's logs).
# A letter, digit, `+`, `*` or `.` right before, or a letter or digit right after, means the digits are part of
# something else (a decision id, a hash, a decimal fraction, a number masked already).
_PHONE: Final = re.compile(
    r"""(?<![\w+*.])(?:
          (?:\+|00)\d(?:[\s./()-]{0,2}\d){7,14}
        | 0\d(?:[\s/-]?\d){7,13}
        | (?<![.\d-])\d{9,15}(?![.-]\d)
    )(?![\w*])""",
    re.VERBOSE,
)
_KEEP_HEAD = 2  # digits kept at the start (country code or trunk prefix and area)
_KEEP_TAIL = 2  # digits kept at the end


def _mask_match(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = [c for c in text if c.isdigit()]
    plus = "+" if text.startswith("+") else ""
    hidden = len(digits) - _KEEP_HEAD - _KEEP_TAIL
    return plus + "".join(digits[:_KEEP_HEAD]) + "*" * hidden + "".join(digits[-_KEEP_TAIL:])


def mask_numbers(text: str) -> str:
    """`call +31 6 1234 5678 failed` -> `call +31*******78 failed`; text without numbers is returned as is."""
    return _PHONE.sub(_mask_match, text)


# Attributes every LogRecord has; anything else on a record came from `extra=` and is a structured field.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class NumberMasker(logging.Filter):
    """Masks telephone numbers in a record's message, its string extras and its traceback (in place).

    Attach it to handlers (a filter on a logger does not see records of its children). After it ran, the
    record's message is final (`args` is cleared) and its traceback text is cached masked in `exc_text`.
    """

    _traceback = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_gatekeeper_masked", False):
            return True  # several handlers share the record; mask once
        try:
            message = record.getMessage()
        except Exception:  # wrong arguments for the format: keep what can be kept
            message = f"{record.msg} (unformattable arguments: {record.args!r})"
        record.msg, record.args = mask_numbers(message), None
        for key, value in extra_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, mask_numbers(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self._traceback.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_numbers(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_numbers(record.stack_info)
        record.__dict__["_gatekeeper_masked"] = True
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, then the extra fields.

    `exception` carries the traceback, `stack` the stack when one was asked for. Values JSON cannot
    represent are written as their `str`.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "_gatekeeper_fields", None)  # a decision's: known without a scan of the record
        for key, value in (fields if fields is not None else extra_fields(record)).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        try:
            return orjson.dumps(entry, default=str).decode()
        except (TypeError, orjson.JSONEncodeError):  # a lone surrogate, or a key that is not a string
            return json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`2026-07-01T10:30:00.123Z INFO gatekeeper.fastagi.server: message key=value ...` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        fields = extra_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def _text_value(value: Any) -> str:
    text = "" if value is None else str(value)
    return json.dumps(text, ensure_ascii=False) if (not text or " " in text or '"' in text) else text


def default_format(stream: TextIO | None = None) -> str:
    """`text` when the stream is a terminal, `json` otherwise (systemd's journal, containers, pipes)."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line's global `--log-format text|json` (default: `default_format()`)."""
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=None,
        help="log lines as text or as one JSON object each (default: text on a terminal, json otherwise)",
    )


class _ConfiguredHandler(logging.StreamHandler[TextIO]):
    """The handler `configure` installs (so a second `configure` replaces it instead of adding another)."""


class _BatchingHandler(_ConfiguredHandler):
    """Lines written in batches: a warning or error at once (with the lines before it), the rest at most
    `FLUSH_INTERVAL` later, from a thread of its own. `gatekeeper serve` logs a line per blocked call; a
    write system call per line would cost its event loop more than the decision's own work."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._size = 0
        self._closed = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically, name="gatekeeper-log-flush", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        with self.lock:  # type: ignore[union-attr]  # logging.Handler creates it in __init__
            self._lines.append(line)
            self._size += len(line)
            urgent = record.levelno >= logging.WARNING or self._size >= BATCH_BYTES
        if urgent:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            lines, self._lines, self._size = self._lines, [], 0
            if lines:
                try:
                    self.stream.write("".join(lines))
                    self.stream.flush()
                except (OSError, ValueError):  # a closed or broken stream: nothing else can be done with them
                    pass

    def _flush_periodically(self) -> None:
        while not self._closed.wait(FLUSH_INTERVAL):
            self.flush()

    def close(self) -> None:
        self._closed.set()
        self.flush()
        super().close()


def configure(
    format: str = "text", level: str = "info", *, stream: TextIO | None = None, batched: bool = False
) -> logging.Handler:
    """Log to `stream` (stderr) in `format` (`text` | `json`) at `level` and above; returns the handler.

    `batched` (the service): lines below warning level are written in batches, at most `FLUSH_INTERVAL`
    late; warnings and errors at once. Idempotent: a second call replaces the handler the first one
    installed. Handlers others installed (pytest's capture, a `LogCounter`) are left alone.
    """
    if format not in FORMATS:
        raise ValueError(f"log format must be one of {' | '.join(FORMATS)}, not {format!r}")
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {' | '.join(LEVELS)}, not {level!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ConfiguredHandler)]:
        root.removeHandler(old)
        old.close()
    target = sys.stderr if stream is None else stream
    handler = _BatchingHandler(target) if batched else _ConfiguredHandler(target)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    handler.addFilter(NumberMasker())
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


class LogCounter(logging.Handler):
    """Counts every record at warning level and above in `gatekeeper_log_messages_total{level,logger}`.

    `install` puts it on the root logger (so asyncio's and aiohttp's errors count too, as `other`);
    `remove` takes it off again (the service does both around its lifetime).
    """

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(logging.WARNING)
        self.metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        self.metrics.count_log(record.levelno, record.name)

    @classmethod
    def install(cls, metrics: Metrics) -> LogCounter:
        counter = cls(metrics)
        logging.getLogger().addHandler(counter)
        return counter

    def remove(self) -> None:
        logging.getLogger().removeHandler(self)


class DecisionLogger:
    """A gate listener: one structured record per decision, on the `gatekeeper.gate.decisions` logger.

    Blocks (and monitor-mode allows that enforcement would have blocked) are logged at INFO, allows at
    DEBUG. A block is the event someone asks about ("why did this call not go out?") and the one an
    operator watches for in the journal; allows are the bulk of the traffic at hundreds of calls per
    second, and each is already kept, with its evidence, in the decision log (SQL). Logging them at INFO
    would double the log volume and cost CPU on the hot path for no question anyone asks of the journal;
    turn DEBUG on to see them. Fail-closed blocks carry `index_error`; the outage itself is reported once
    by the component that saw it and counted in `gatekeeper_fail_closed_decisions_total`.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger if logger is not None else logging.getLogger(DECISIONS_LOGGER)

    def __call__(self, record: DecisionRecord, /) -> None:
        level = logging.INFO if record.verdict is Verdict.BLOCK or record.would_block else logging.DEBUG
        if not self.log.isEnabledFor(level):
            return  # the common case for allows: no log record built at all
        fields = record.log_fields()
        # Every field is the record's: the number is masked already; only the campaign, which comes from
        # the PBX, may hold digits (a dialplan that passes the number as the campaign). Masked here, the
        # record skips the handlers' masking filter; built directly, it skips logging's stack walk.
        fields["campaign"] = campaign = mask_numbers(record.campaign)
        message = (
            f"{record.verdict.value.upper()} {record.reason.value}: campaign {campaign}, "
            f"number {record.number_masked} (decision {record.decision_id}, {record.latency_us} µs)"
        )
        extra = {**fields, "_gatekeeper_masked": True, "_gatekeeper_fields": fields}
        self.log.handle(self.log.makeRecord(self.log.name, level, __file__, 0, message, (), None, extra=extra))


__all__ = [
    "DECISIONS_LOGGER",
    "FORMATS",
    "LEVELS",
    "DecisionLogger",
    "JsonFormatter",
    "LogCounter",
    "NumberMasker",
    "TextFormatter",
    "add_arguments",
    "configure",
    "default_format",
    "extra_fields",
    "mask_numbers",
]
