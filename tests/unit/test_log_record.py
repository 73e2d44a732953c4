"""The decision record, its serialisations and chain hash, DSNs, cursors, summaries and the spool file."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import os
import threading
import time
from pathlib import Path

import pytest

from gatekeeper.config import sqlite_path
from gatekeeper.core.model import Reason, Verdict
from gatekeeper.log.commands import add_log_parser
from gatekeeper.log.outbox import OutboxKeys, Spool
from gatekeeper.log.query import (
    CursorError,
    DecisionFilter,
    Summary,
    SummaryRow,
    _csv_cell,
    decode_cursor,
    encode_cursor,
)
from gatekeeper.log.record import GENESIS, DecisionRecord, RecordError, chain_hash, format_time, parse_time
from tests.conftest import make_record

AT = dt.datetime(2026, 7, 1, 10, 30, 0, 123456, tzinfo=dt.UTC)


def test_json_round_trip_is_exact() -> None:
    record = make_record(
        explanation='Objection registered "today" — geen toestemming',
        basis_reference="form-7",
        index_error="timeout",
        generation=None,
    )
    assert DecisionRecord.loads(record.dumps()) == record
    assert DecisionRecord.loads(record.dumps().encode()) == record


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"v": 2}, "version"),
        ({"reason": "because"}, "because"),
        ({"verdict": None}, "verdict"),
        ({"would_block": "no"}, "would_block"),
        ({"rule": True}, "rule"),
        ({"at": "yesterday"}, "yesterday"),
    ],
)
def test_unreadable_records_are_refused(change: dict[str, object], message: str) -> None:
    data = make_record().to_json()
    data.update(change)
    with pytest.raises(RecordError, match=message):
        DecisionRecord.loads(json.dumps(data))


def test_not_json_is_refused() -> None:
    with pytest.raises(RecordError):
        DecisionRecord.loads(b'{"v": 1, "decision_')


def test_times_are_fixed_width_utc_text() -> None:
    local = dt.datetime(2026, 7, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert format_time(local) == "2026-07-01T10:30:00.000000Z"
    assert parse_time(format_time(AT)) == AT
    with pytest.raises(ValueError, match="timezone"):
        format_time(dt.datetime(2026, 7, 1))


def test_chain_hash_covers_every_field_and_the_previous_hash() -> None:
    record = make_record()
    base = chain_hash(record, 1, "1-0", AT, GENESIS)
    assert base == chain_hash(record, 1, "1-0", AT, GENESIS)
    variants = [
        chain_hash(dataclasses.replace(record, reason=Reason.CONSENT), 1, "1-0", AT, GENESIS),
        chain_hash(dataclasses.replace(record, would_block=True), 1, "1-0", AT, GENESIS),
        chain_hash(dataclasses.replace(record, basis_reference=""), 1, "1-0", AT, GENESIS),
        chain_hash(record, 2, "1-0", AT, GENESIS),
        chain_hash(record, 1, "1-1", AT, GENESIS),
        chain_hash(record, 1, "1-0", AT + dt.timedelta(microseconds=1), GENESIS),
        chain_hash(record, 1, "1-0", AT, "1" + GENESIS[1:]),
    ]
    assert len({base, *variants}) == len(variants) + 1


@pytest.mark.parametrize(
    ("dsn", "path"),
    [
        ("sqlite:///var/lib/gatekeeper/decisions.db", "/var/lib/gatekeeper/decisions.db"),
        ("sqlite:///gatekeeper-decisions.db", "gatekeeper-decisions.db"),
        ("sqlite:decisions.db", "decisions.db"),
        ("sqlite:data/decisions.db", "data/decisions.db"),
        ("sqlite:////abs.db", "/abs.db"),
        ("sqlite:///tmp/my%20log.db", "/tmp/my log.db"),
    ],
)
def test_sqlite_dsns_name_files(dsn: str, path: str) -> None:
    assert sqlite_path(dsn) == Path(path)


@pytest.mark.parametrize("dsn", ["sqlite://host/x.db", "sqlite://", "postgresql://x/y"])
def test_bad_sqlite_dsns_are_refused(dsn: str) -> None:
    with pytest.raises(ValueError, match="sqlite"):
        sqlite_path(dsn)


def test_cursor_round_trip_and_garbage() -> None:
    record = make_record()
    assert decode_cursor(encode_cursor(record)) == (format_time(record.at), record.decision_id)
    for junk in ("", "not-a-cursor", "MjAyNi0wNy0wMQ", encode_cursor(record)[:-3]):
        with pytest.raises(CursorError):
            decode_cursor(junk)


def test_filter_builds_parameters_not_sql_text() -> None:
    clauses, params = DecisionFilter(
        start=AT, campaign="x'; DROP TABLE decisions; --", verdict=Verdict.BLOCK, reason=Reason.OBJECTION
    ).where()
    assert clauses == ["at >= ?", "campaign = ?", "verdict = ?", "reason = ?"]
    assert params == [format_time(AT), "x'; DROP TABLE decisions; --", "block", "objection"]


def test_summary_folds_rows_into_days() -> None:
    d1, d2, d3 = dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)
    summary = Summary(
        d1,
        d3,
        "Europe/Amsterdam",
        (
            SummaryRow(d1, "a", Verdict.BLOCK, Reason.OBJECTION, False, 3),
            SummaryRow(d1, "b", Verdict.BLOCK, Reason.OBJECTION, False, 2),
            SummaryRow(d1, "b", Verdict.ALLOW, Reason.CONSENT, False, 5),
            SummaryRow(d3, "c", Verdict.ALLOW, Reason.NO_BASIS, True, 4),
        ),
    )
    assert summary.days() == [d1, d2, d3]
    assert summary.blocked_per_reason() == {d1: {"objection": 5}, d2: {}, d3: {}}
    assert summary.blocked_per_campaign() == {d1: {"a": 3, "b": 2}, d2: {}, d3: {}}
    assert summary.would_block_per_reason() == {d1: {}, d2: {}, d3: {"no-basis": 4}}
    assert summary.totals() == {"allow": 9, "block": 5, "would_block": 4}


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("+31 6 ****5678", "'+31 6 ****5678"),
        ("=HYPERLINK(1)", "'=HYPERLINK(1)"),
        ("-1", "'-1"),
        ("@sum", "'@sum"),
        ("plain", "plain"),
        (None, ""),
        (True, "true"),
        (42, "42"),
    ],
)
def test_csv_cells_cannot_become_formulas(value: object, cell: str) -> None:
    assert _csv_cell(value) == cell


def test_outbox_key_follows_the_prefix_convention() -> None:
    assert OutboxKeys("gk", "pbx-1").stream == "gk:outbox:pbx-1"


def records(n: int) -> list[DecisionRecord]:
    base = make_record()
    return [dataclasses.replace(base, decision_id=f"id-{i:04d}") for i in range(n)]


def test_spool_appends_durable_lines_and_hands_them_over(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", "pbx-1")
    assert not spool.has_records() and spool.take() is None
    first, second, third = records(3)
    spool.append([first.payload()])
    spool.append([second.payload()])
    assert spool.count() == 2 and spool.has_records()
    assert oct(spool.path.stat().st_mode & 0o777) == "0o600"
    taken = spool.take()
    assert taken is not None and not spool.path.exists()
    spool.append([third.payload()])  # a new spool file while the old one is replayed
    assert spool.replay_files() == [taken] and spool.count() == 3
    assert Spool.read(taken) == ([first, second], 0)
    spool.done(taken)
    assert spool.replay_files() == [] and spool.count() == 1
    assert "612345678" not in spool.path.read_text()


def test_a_torn_last_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "pbx-1")
    good = records(1)[0]
    spool.append([good.payload()])
    with spool.path.open("a") as f:
        f.write('{"v":1,"decision_id":"torn')
    taken = spool.take()
    assert taken is not None
    assert Spool.read(taken) == ([good], 1)


def _open_count(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return count


def test_an_append_waiting_during_the_hand_over_lands_in_the_new_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "pbx-1")
    one, two = records(2)
    spool.append([one.payload()])
    holder = os.open(spool.path, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # what `take` holds while it renames
    writer = threading.Thread(target=spool.append, args=([two.payload()],))
    writer.start()
    deadline = time.monotonic() + 5
    while _open_count(spool.path) < 2 and time.monotonic() < deadline:  # the writer opened the old file
        time.sleep(0.001)
    taken = tmp_path / "handed-over.jsonl"
    os.rename(spool.path, taken)
    os.close(holder)  # releases the lock: the writer finds its file renamed and opens a new one
    writer.join(5)
    assert not writer.is_alive()
    assert Spool.read(taken) == ([one], 0)
    assert Spool.read(spool.path) == ([two], 0)


def test_an_empty_spool_file_is_removed_not_replayed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "pbx-1")
    spool.path.touch()
    assert spool.take() is None and not spool.path.exists()


def log_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatekeeper")
    add_log_parser(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["log", "verify"], {"log_action": "verify", "instance": None}),
        (["log", "verify", "--instance", "pbx-2"], {"log_action": "verify", "instance": "pbx-2"}),
        (["log", "purge"], {"log_action": "purge", "days": None}),
        (["log", "purge", "--days", "30"], {"log_action": "purge", "days": 30}),
        (["log", "ship", "--once"], {"log_action": "ship", "once": True, "instance": None, "spool_dir": None}),
        (["log", "ship", "--once", "--spool-dir", "/var/spool/gk"], {"spool_dir": "/var/spool/gk"}),
        (["log", "ship"], {"log_action": "ship", "once": False}),  # continuous: the shipper's own process
    ],
)
def test_log_subcommands_parse(argv: list[str], expected: dict[str, object]) -> None:
    args = vars(log_parser().parse_args(argv))
    assert {k: args[k] for k in expected} == expected


@pytest.mark.parametrize(
    "argv", [["log"], ["log", "ship", "--twice"], ["log", "purge", "--days", "x"], ["log", "rotate"]]
)
def test_bad_log_subcommands_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        log_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err
