"""The SQL decision log on real SQLite files and a private PostgreSQL: the same tests on both.

Chained inserts, duplicates, tampering (edited, deleted, inserted, replaced records), the retention
purge, keyset pagination, filters, summaries, CSV export and the audit trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import datetime as dt
import io
import secrets
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gatekeeper.core.model import Reason, Verdict
from gatekeeper.core.times import Zones
from gatekeeper.log.query import (
    CSV_COLUMNS,
    DECISION_COLUMNS,
    EXPORT_PAGE,
    CursorError,
    DecisionFilter,
    row_from_stored,
)
from gatekeeper.log.record import DecisionRecord, StoredRecord, chain_hash, format_time
from gatekeeper.log.sql import SchemaError, SqliteDatabase
from gatekeeper.log.store import ChainConflict, LogStore, ProblemKind
from gatekeeper.record import new_decision_id
from tests.pg import shared_postgres

pytestmark = pytest.mark.integration
T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
HASH_A, HASH_B = "a1" * 16, "b2" * 16


def backend_dsn(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'decisions.db'}"
    return shared_postgres().new_schema(f"t_{secrets.token_hex(6)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_dsn(str(request.param), tmp_path)


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[LogStore]:
    opened = await LogStore.from_dsn(dsn).open()
    yield opened
    await opened.close()


def record(
    at: dt.datetime = T0,
    *,
    campaign: str = "acme-sales",
    tenant: str | None = "acme",
    verdict: Verdict = Verdict.BLOCK,
    reason: Reason = Reason.NO_BASIS,
    number_hash: str | None = HASH_A,
    instance: str = "pbx-1",
    would_block: bool = False,
) -> DecisionRecord:
    return DecisionRecord(
        decision_id=new_decision_id(at.timestamp()),
        at=at,
        instance=instance,
        campaign=campaign,
        tenant=tenant,
        number_masked="+31 6 ****5678",
        number_hash=number_hash,
        verdict=verdict,
        reason=reason,
        would_block=would_block,
        regime="nl-2021",
        explanation="No consent and no customer relationship.",
        basis_reference=None,
        rule=9,
        generation=3,
        uniqueid="1751365800.17",
        linkedid="1751365800.16",
        source="fastagi",
        latency_us=420,
        index_error=None,
    )


_stream_seq = iter(range(1, 10**9))


def entries(records: list[DecisionRecord]) -> list[tuple[str, DecisionRecord]]:
    return [(f"1700000000000-{next(_stream_seq)}", r) for r in records]


async def ship(store: LogStore, records: list[DecisionRecord]) -> None:
    report = await store.insert_batch(entries(records))
    assert report.inserted == len(records)


async def sql(store: LogStore, statement: str, *params: object) -> int:
    async with store.db.transaction(write=True) as tx:
        return await tx.execute(statement, params)


async def test_records_round_trip(store: LogStore) -> None:
    full = dataclasses.replace(
        record(T0),
        explanation='Bezwaar "vandaag" geregistreerd — ook €',
        basis_reference="form-7",
        index_error="timeout",
        would_block=True,
    )
    sparse = dataclasses.replace(
        record(T0 + dt.timedelta(seconds=1), tenant=None, number_hash=None),
        regime=None,
        generation=None,
        uniqueid="",
        linkedid="",
    )
    await ship(store, [full, sparse])
    got_full, got_sparse = await store.get(full.decision_id), await store.get(sparse.decision_id)
    assert got_full is not None and got_sparse is not None
    assert (got_full.record, got_sparse.record) == (full, sparse)
    assert (got_full.seq, got_sparse.seq) == (1, 2)
    assert got_sparse.prev_hash == got_full.hash == got_full.computed_hash()
    assert await store.get("nope") is None
    assert (await store.verify_chain()).ok


async def test_a_decision_shipped_twice_is_stored_once(store: LogStore) -> None:
    a, b, c = record(T0), record(T0), record(T0)
    first = await store.insert_batch(entries([a, b, a]))  # the same entry twice in one batch
    second = await store.insert_batch(entries([b, c, a]))  # re-shipped entries, under new stream ids
    assert (first.inserted, first.duplicates, second.inserted, second.duplicates) == (2, 1, 1, 2)
    assert await store.count() == 3
    assert sorted(s.seq for s in (await store.list_decisions()).items) == [1, 2, 3]
    assert (await store.verify_chain()).ok


async def test_two_shippers_of_one_instance_never_fork_the_chain(dsn: str) -> None:
    one, two = await LogStore.from_dsn(dsn).open(), await LogStore.from_dsn(dsn).open()
    batch = entries([record(T0 + dt.timedelta(seconds=i)) for i in range(40)])

    async def ship_until_stored(target: LogStore, part: list[tuple[str, DecisionRecord]]) -> None:
        for _ in range(5):
            try:
                await target.insert_batch(part)
                return
            except ChainConflict:
                continue
        raise AssertionError("kept conflicting")

    try:
        await asyncio.gather(ship_until_stored(one, batch[:30]), ship_until_stored(two, batch[10:]))
        assert await one.count() == 40
        report = await one.verify_chain()
        assert report.ok and report.checked == {"pbx-1": 40}
    finally:
        await one.close()
        await two.close()


async def test_migrations_apply_once_and_refuse_a_newer_schema(store: LogStore, dsn: str) -> None:
    again = await LogStore.from_dsn(dsn).open()
    try:
        async with again.db.transaction(write=False) as tx:
            assert await tx.fetchall("SELECT version FROM schema_migrations") == [(1,)]
        await sql(again, "INSERT INTO schema_migrations (version, description, applied_at) VALUES (99, 'x', 'y')")
    finally:
        await again.close()
    newer = LogStore.from_dsn(dsn)
    try:
        with pytest.raises(SchemaError, match="version 99"):
            await newer.open()
    finally:
        await newer.close()


async def chain_of(store: LogStore, n: int, instance: str = "pbx-1") -> list[DecisionRecord]:
    records = [record(T0 + dt.timedelta(minutes=i), instance=instance) for i in range(n)]
    await ship(store, records)
    return records


async def test_the_chain_detects_an_edited_record(store: LogStore) -> None:
    records = await chain_of(store, 5)
    await chain_of(store, 3, instance="pbx-2")
    assert (
        await sql(
            store, "UPDATE decisions SET reason = 'consent', verdict = 'allow' WHERE seq = 2 AND instance = 'pbx-1'"
        )
        == 1
    )
    report = await store.verify_chain()
    assert report.checked == {"pbx-1": 5, "pbx-2": 3}
    assert [(p.instance, p.kind, p.seq, p.decision_id) for p in report.problems] == [
        ("pbx-1", ProblemKind.EDITED, 2, records[1].decision_id)
    ]


async def test_the_chain_detects_deleted_records(store: LogStore) -> None:
    records = await chain_of(store, 6)
    await sql(store, "DELETE FROM decisions WHERE seq = 3")
    await sql(store, "DELETE FROM decisions WHERE seq = 6")  # the newest one too
    report = await store.verify_chain()
    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.DELETED, 3), (ProblemKind.DELETED, 6)]
    assert records[3].decision_id in report.problems[0].detail
    assert "up to the head" in report.problems[1].detail


async def test_the_chain_detects_an_inserted_record(store: LogStore) -> None:
    await chain_of(store, 3)
    last = (await store.list_decisions(limit=1)).items[0]
    # A forger who knows the algorithm appends a well-formed record after the head…
    forged_record = record(T0 + dt.timedelta(hours=1))
    shipped = T0 + dt.timedelta(hours=1)
    digest = chain_hash(forged_record, 4, "1-0", shipped, last.hash)
    forged = StoredRecord(forged_record, 4, "1-0", shipped, last.hash, digest)
    # …and another one under an instance that never shipped anything.
    stray_record = record(T0, instance="ghost")
    stray = StoredRecord(
        stray_record, 1, "1-0", shipped, "0" * 64, chain_hash(stray_record, 1, "1-0", shipped, "0" * 64)
    )
    marks = ", ".join("?" * len(DECISION_COLUMNS))
    async with store.db.transaction(write=True) as tx:
        await tx.executemany(
            f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)}) VALUES ({marks})",
            [row_from_stored(forged), row_from_stored(stray)],
        )
    report = await store.verify_chain()
    assert sorted((p.instance, p.kind, p.seq, p.decision_id) for p in report.problems) == [
        ("ghost", ProblemKind.INSERTED, 1, stray_record.decision_id),
        ("pbx-1", ProblemKind.INSERTED, 4, forged_record.decision_id),
    ]


async def test_the_chain_detects_a_replaced_record(store: LogStore) -> None:
    records = await chain_of(store, 4)
    second = await store.get(records[1].decision_id)
    assert second is not None
    # Replaced by a self-consistent record (its own hash recomputed): the next record no longer links to it.
    fake = dataclasses.replace(second.record, reason=Reason.CONSENT, verdict=Verdict.ALLOW)
    digest = chain_hash(fake, 2, second.stream_id, second.shipped_at, second.prev_hash)
    await sql(store, "UPDATE decisions SET reason = ?, verdict = ?, hash = ? WHERE seq = 2", "consent", "allow", digest)
    report = await store.verify_chain()
    assert [(p.kind, p.seq, p.decision_id) for p in report.problems] == [
        (ProblemKind.BROKEN_LINK, 3, records[2].decision_id)
    ]


async def test_purge_deletes_old_records_and_the_rest_still_verifies(store: LogStore) -> None:
    now = T0 + dt.timedelta(days=10)
    await ship(store, [record(T0 + dt.timedelta(days=d)) for d in range(10)])  # day 0 … day 9
    await ship(store, [record(T0 + dt.timedelta(days=d), instance="pbx-2") for d in range(4)])
    report = await store.purge(days=5, now=now, batch=2)  # several batches
    assert report.cutoff == T0 + dt.timedelta(days=5)
    assert report.deleted == {"pbx-1": 5, "pbx-2": 4} and report.total == 9 and not report.stopped
    assert await store.count() == 5
    assert min(s.record.at for s in (await store.list_decisions()).items) == T0 + dt.timedelta(days=5)
    chains = await store.chains()
    assert (chains["pbx-1"].base_seq, chains["pbx-1"].head_seq, chains["pbx-1"].purged) == (5, 10, 5)
    assert (chains["pbx-2"].base_seq, chains["pbx-2"].head_seq) == (4, 4)
    assert (await store.verify_chain()).ok
    await ship(store, [record(now), record(now, instance="pbx-2")])  # shipping goes on after a purge
    assert (await store.verify_chain()).ok
    assert (await store.purge(days=5, now=now)).total == 0
    # Deleting a record below the purge point is still noticed.
    await sql(store, "DELETE FROM decisions WHERE seq = 6 AND instance = 'pbx-1'")
    assert [(p.kind, p.seq) for p in (await store.verify_chain()).problems] == [(ProblemKind.DELETED, 6)]


async def test_purge_stops_at_a_broken_link_instead_of_deleting_the_evidence(store: LogStore) -> None:
    records = await chain_of(store, 6)
    await sql(store, "UPDATE decisions SET explanation = 'nothing to see' WHERE seq = 3")
    report = await store.purge(days=0, now=T0 + dt.timedelta(days=1))
    assert report.deleted == {"pbx-1": 2}
    assert [(p.kind, p.seq, p.decision_id) for p in report.stopped] == [
        (ProblemKind.BROKEN_LINK, 3, records[2].decision_id)
    ]
    problems = (await store.verify_chain()).problems
    assert [(p.kind, p.seq) for p in problems] == [(ProblemKind.EDITED, 3)]


async def test_a_late_shipped_old_record_waits_for_the_records_shipped_before_it(store: LogStore) -> None:
    now = T0 + dt.timedelta(days=30)
    old, new, late = record(T0), record(now - dt.timedelta(hours=1)), record(T0 + dt.timedelta(hours=1))
    await ship(store, [old, new, late])  # `late` was spooled during an outage and shipped after `new`
    report = await store.purge(days=7, now=now)
    assert report.total == 1
    assert {s.decision_id for s in (await store.list_decisions()).items} == {new.decision_id, late.decision_id}
    assert (await store.verify_chain()).ok


async def test_pages_are_newest_first_without_gaps_or_repeats(store: LogStore) -> None:
    # 23 records, several sharing a timestamp (the decision id breaks the tie).
    records = [record(T0 + dt.timedelta(seconds=i // 3)) for i in range(23)]
    await ship(store, records)
    expected = sorted(records, key=lambda r: (format_time(r.at), r.decision_id), reverse=True)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.list_decisions(limit=5, cursor=cursor)
        pages += 1
        seen += [s.decision_id for s in page.items]
        if pages == 2:
            await ship(store, [record(T0 + dt.timedelta(days=1))])  # a newer record does not shift the pages
        if page.next is None:
            break
        cursor = page.next
    assert pages == 5
    assert seen == [r.decision_id for r in expected]


async def test_a_page_size_must_be_sane_and_a_cursor_ours(store: LogStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.list_decisions(limit=0)
    with pytest.raises(CursorError):
        await store.list_decisions(cursor="garbage!")


async def test_filters_combine_and_count_agrees(store: LogStore) -> None:
    day = dt.timedelta(days=1)
    await ship(
        store,
        [
            record(T0, campaign="acme-sales", reason=Reason.OBJECTION),
            record(T0 + day, campaign="acme-sales", verdict=Verdict.ALLOW, reason=Reason.CONSENT, number_hash=HASH_B),
            record(T0 + 2 * day, campaign="donors", tenant="goededoel", reason=Reason.OUTSIDE_HOURS),
            record(T0 + 3 * day, campaign="donors", tenant="goededoel", reason=Reason.OBJECTION, number_hash=HASH_B),
            record(T0 + 3 * day, campaign="x", tenant=None, reason=Reason.UNKNOWN_CAMPAIGN, instance="pbx-2"),
        ],
    )
    cases = {
        DecisionFilter(): 5,
        DecisionFilter(campaign="donors"): 2,
        DecisionFilter(tenant="acme"): 2,
        DecisionFilter(verdict=Verdict.ALLOW): 1,
        DecisionFilter(verdict=Verdict.BLOCK, reason=Reason.OBJECTION): 2,
        DecisionFilter(number_hash=HASH_B): 2,
        DecisionFilter(start=T0 + day): 4,  # inclusive
        DecisionFilter(end=T0 + day): 1,  # exclusive
        DecisionFilter(start=T0 + day, end=T0 + 3 * day): 2,
        DecisionFilter(instance="pbx-2"): 1,
        DecisionFilter(tenant="acme", reason=Reason.OUTSIDE_HOURS): 0,
    }
    for where, n in cases.items():
        page = await store.list_decisions(where, limit=100)
        assert (len(page.items), await store.count(where)) == (n, n), where
    assert [s.record.reason for s in await store.decisions_for_number(HASH_B)] == [Reason.OBJECTION, Reason.CONSENT]


async def test_summary_counts_blocked_calls_per_local_day(store: LogStore) -> None:
    await ship(
        store,
        [
            record(dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC), reason=Reason.OBJECTION),
            record(dt.datetime(2026, 3, 1, 22, 59, tzinfo=dt.UTC), reason=Reason.OBJECTION),  # 23:59 in Amsterdam
            record(dt.datetime(2026, 3, 1, 23, 30, tzinfo=dt.UTC), reason=Reason.NO_BASIS),  # 2 March 00:30 local
            record(dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC), campaign="donors", tenant="goededoel"),
            record(dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC), verdict=Verdict.ALLOW, reason=Reason.CONSENT),
            record(dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC), verdict=Verdict.ALLOW, would_block=True),
            record(dt.datetime(2026, 3, 4, 9, tzinfo=dt.UTC), reason=Reason.OBJECTION),  # after the range
            record(dt.datetime(2026, 2, 28, 22, 59, tzinfo=dt.UTC), reason=Reason.OBJECTION),  # before it
        ],
    )
    d1, d2, d3 = dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)
    summary = await store.summary(d1, d3, tz="Europe/Amsterdam")
    assert summary.blocked_per_reason() == {d1: {"objection": 2}, d2: {"no-basis": 2}, d3: {}}
    assert summary.blocked_per_campaign() == {d1: {"acme-sales": 2}, d2: {"acme-sales": 1, "donors": 1}, d3: {}}
    assert summary.would_block_per_reason() == {d1: {}, d2: {"no-basis": 1}, d3: {}}
    assert summary.totals() == {"allow": 2, "block": 4, "would_block": 1}
    utc = await store.summary(d1, d1)  # in UTC the 23:30 call is still on the 1st
    assert utc.blocked_per_reason() == {d1: {"objection": 2, "no-basis": 1}}
    donors = await store.summary(d1, d3, tz="Europe/Amsterdam", tenant="goededoel")
    assert donors.totals() == {"allow": 0, "block": 1, "would_block": 0}


async def test_csv_export_streams_every_matching_record(store: LogStore) -> None:
    n = EXPORT_PAGE + 7
    await ship(store, [record(T0 + dt.timedelta(seconds=i)) for i in range(n)])
    await ship(store, [record(T0, campaign="donors", tenant="goededoel")])
    chunks = [chunk async for chunk in store.export_csv(DecisionFilter(campaign="acme-sales"))]
    assert len(chunks) >= 2
    rows = list(csv.reader(io.StringIO("".join(chunks))))
    assert rows[0] == list(CSV_COLUMNS)
    assert len(rows) == n + 1
    first = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert first["number_masked"] == "'+31 6 ****5678"  # never read as a formula
    assert first["would_block"] == "false" and first["basis_reference"] == "" and first["campaign"] == "acme-sales"
    assert first["at"] == "2026-03-01T09:16:46+00:00"  # newest first (T0 + n - 1 s); without zones in UTC
    zones = Zones({}, ZoneInfo("Europe/Amsterdam"))
    donors = [chunk async for chunk in store.export_csv(DecisionFilter(campaign="donors"), zones=zones)]
    [local] = csv.DictReader(io.StringIO("".join(donors)))
    assert local["at"] == "2026-03-01T10:00:00+01:00"  # T0 as people in Amsterdam read it
    assert dt.datetime.fromisoformat(local["shipped_at"]).utcoffset() == dt.timedelta(hours=1)
    empty = [chunk async for chunk in store.export_csv(DecisionFilter(campaign="none"))]
    assert list(csv.reader(io.StringIO("".join(empty)))) == [list(CSV_COLUMNS)]


async def test_audit_trail_records_who_changed_what(store: LogStore) -> None:
    first = await store.add_audit("alice", "compliance", "objection", number_hash=HASH_A, details={"tenant": "acme"})
    second = await store.add_audit("bob", "admin", "erasure", number_hash=HASH_B, details={"reference": "ticket-9"})
    third = await store.add_audit("carol", "admin", "consents.upsert", details={"rows": 3}, at=T0)
    assert first < second < third
    entries_ = await store.list_audit()
    assert [(e.actor, e.role, e.action) for e in entries_] == [
        ("carol", "admin", "consents.upsert"),
        ("bob", "admin", "erasure"),
        ("alice", "compliance", "objection"),
    ]
    assert entries_[0].details == {"rows": 3} and entries_[0].at == T0 and entries_[0].number_hash is None
    assert [e.id for e in await store.list_audit(limit=1, before_id=third)] == [second]
    assert [e.to_json()["details"] for e in await store.list_audit(number_hash=HASH_A)] == [{"tenant": "acme"}]


async def test_a_transaction_cancelled_while_it_begins_leaves_none_open(tmp_path: Path) -> None:
    """A shipper stopped while its BEGIN waits in the SQLite thread: the next transaction still works."""
    path = tmp_path / "cancel.db"
    db = SqliteDatabase(path)
    async with db.transaction(write=True) as tx:
        await tx.execute("CREATE TABLE t (x INTEGER)")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the next BEGIN IMMEDIATE waits for it

    async def write() -> None:
        async with db.transaction(write=True) as tx:
            await tx.execute("INSERT INTO t VALUES (1)")

    task = asyncio.create_task(write())
    await asyncio.sleep(0.2)  # the BEGIN is waiting in the database's thread
    task.cancel()
    await asyncio.sleep(0.05)  # the cancelled task now waits for its rollback, queued behind the BEGIN
    blocker.execute("ROLLBACK")  # the BEGIN gets its lock now, after its caller is gone
    blocker.close()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    async with db.transaction(write=True) as tx:
        await tx.execute("INSERT INTO t VALUES (2)")
    async with db.transaction(write=False) as tx:
        assert await tx.fetchall("SELECT x FROM t") == [(2,)]
    await db.close()
