"""Decisions from the gate to SQL through the Redis outbox, against real Redis, SQLite and PostgreSQL.

No loss and no duplicates when the shipper dies between read and insert or between commit and
acknowledgement, when PostgreSQL stops and starts again, and when Redis is away (spool, then replay).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import io
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import ClientSession
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from gatekeeper.compose import build_service, command_gate
from gatekeeper.config import Address, HttpSettings, LogSettings, Settings
from gatekeeper.core.model import Reason, Verdict
from gatekeeper.devservers import PrivateRedis, free_port
from gatekeeper.gate import CallRequest, Gate
from gatekeeper.index.store import ConsentIndex, connect
from gatekeeper.log.commands import add_log_parser, cmd_log, log_purge, log_ship_once, log_verify
from gatekeeper.log.outbox import RECORD_FIELD, Outbox, OutboxKeys, Spool
from gatekeeper.log.shipper import Shipper, Stage, shipper_client
from gatekeeper.log.store import LogStore
from gatekeeper.metrics import Metrics
from gatekeeper.record import DecisionRecord, EvidenceError
from tests.conftest import PEPPER, make_settings, pinned
from tests.pg import PrivatePostgres, shared_postgres

pytestmark = pytest.mark.integration


INSTANCE = "pbx-1"
DIGITS = ("612345678", "0612345678", "06123456789")  # the number in every form it was dialled


class Crash(BaseException):
    """Stands for the process being killed at a stage (nothing catches it)."""


def backend_dsn(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'decisions.db'}"
    return shared_postgres().new_schema(f"t_{secrets.token_hex(6)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def log_settings(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> Settings:
    dsn = backend_dsn(str(request.param), tmp_path)
    return dataclasses.replace(settings, log=LogSettings(dsn=dsn, instance=INSTANCE))


@pytest.fixture
async def store(log_settings: Settings) -> AsyncIterator[LogStore]:
    opened = await LogStore.from_dsn(log_settings.log.dsn).open()
    yield opened
    await opened.close()


def make_outbox(settings: Settings, index: ConsentIndex, spool_dir: Path) -> Outbox:
    outbox = Outbox.from_settings(settings, index.client, spool_dir=spool_dir)
    outbox.retry_initial, outbox.retry_max = 0.02, 0.1
    return outbox


def make_shipper(settings: Settings, store: LogStore, *, batch: int = 500, metrics: Metrics | None = None) -> Shipper:
    return Shipper(
        shipper_client(settings, block=0.05),
        store,
        OutboxKeys(settings.index.prefix, INSTANCE),
        metrics=metrics,
        batch=batch,
        block=0.05,
        retry_initial=0.02,
        retry_max=0.1,
    )


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 20.0) -> None:
    """Poll a condition that a background task makes true, with a bounded deadline."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def synthetic(n: int, at: dt.datetime | None = None) -> list[DecisionRecord]:
    at = at or dt.datetime.now(dt.UTC)
    return [
        DecisionRecord(
            decision_id=f"{secrets.token_hex(13)}",
            at=at,
            instance=INSTANCE,
            campaign="acme-sales",
            tenant="acme",
            number_masked="+31 6 ****5678",
            number_hash="ab" * 16,
            verdict=Verdict.BLOCK,
            reason=Reason.NO_BASIS,
            would_block=False,
            regime="nl-2021",
            explanation="No consent.",
            basis_reference=None,
            rule=9,
            generation=1,
            uniqueid=f"1751365800.{i}",
            linkedid=f"1751365800.{i}",
            source="fastagi",
            latency_us=300,
            index_error=None,
        )
        for i in range(n)
    ]


async def stored_ids(store: LogStore) -> list[str]:
    async with store.db.transaction(write=False) as tx:
        return [r[0] for r in await tx.fetchall("SELECT decision_id FROM decisions")]


async def assert_exactly_once(store: LogStore, expected: list[str]) -> None:
    ids = await stored_ids(store)
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(expected)
    assert (await store.verify_chain()).ok


async def stream_state(shipper: Shipper) -> tuple[int, int]:
    """(entries in the stream, entries read but not acknowledged)."""
    pending = await shipper.client.xpending(shipper.keys.stream, shipper.keys.group)
    return int(await shipper.client.xlen(shipper.keys.stream)), int(pending["pending"])


CALLS = [
    CallRequest("0612345678", "acme-sales", uniqueid="1.1", linkedid="1.0", source="fastagi"),
    CallRequest("+31 6 12345678", "acme-shadow", uniqueid="1.2", linkedid="1.0", source="ari"),
    CallRequest("0031612345678", "donors", source="cli"),
    CallRequest("0612345678", "no-such-campaign", source="agi"),
    CallRequest("06123456789", "acme-sales", source="api"),  # too long: invalid, no hash
    CallRequest("112", "acme-sales", source="fastagi"),
    CallRequest("0612345678", "acme-sales", caller_id="+31209999999", source="fastagi"),
]


async def decide(gate: Gate, calls: list[CallRequest]) -> list[DecisionRecord]:
    return [await gate.check(call) for call in calls]  # each returns once its record is kept


async def test_every_gate_decision_reaches_sql_once_with_its_evidence(
    log_settings: Settings, index: ConsentIndex, store: LogStore, tmp_path: Path
) -> None:
    outbox = make_outbox(log_settings, index, tmp_path)
    gate = Gate(log_settings, index, outbox, budget=2.0, clock=pinned())
    results = await decide(gate, CALLS)
    assert outbox.appended == len(CALLS) and outbox.spooled == 0
    registry = CollectorRegistry()
    shipper = make_shipper(log_settings, store, metrics=Metrics(log_settings, registry))
    try:
        await shipper.update_metrics()
        assert registry.get_sample_value("gatekeeper_outbox_backlog") == len(CALLS)
        assert await shipper.ship_once() == len(CALLS)
        assert registry.get_sample_value("gatekeeper_outbox_backlog") == 0
        assert registry.get_sample_value("gatekeeper_shipper_lag_seconds") == 0
        assert await stream_state(shipper) == (0, 0)
        assert (await shipper.readiness()).ok
    finally:
        await shipper.client.aclose()
    await assert_exactly_once(store, [r.decision_id for r in results])
    for result in results:
        stored = await store.get(result.decision_id)
        assert stored is not None
        assert stored.record == result  # every field, as the gate made it
        assert result.instance == INSTANCE and result.at == pinned()().astimezone(dt.UTC)
    by_reason = {s.record.reason for s in (await store.list_decisions()).items}
    assert {Reason.UNKNOWN_CAMPAIGN, Reason.INVALID_NUMBER, Reason.EMERGENCY, Reason.CALLER_ID} <= by_reason


async def redis_dump(client: Redis, prefix: str) -> bytes:
    out = []
    async for key in client.scan_iter(match=f"{prefix}:*"):
        out.append(key)
        kind = await client.type(key)
        if kind == b"stream":
            out.append(repr(await client.xrange(key)).encode())
        else:
            out.append(await client.dump(key) or b"")
    return b"\n".join(out)


async def sql_dump(store: LogStore) -> str:
    parts = []
    async with store.db.transaction(write=False) as tx:
        for table in ("decisions", "chains", "audit", "dead_letters", "schema_migrations"):
            parts.append(repr(await tx.fetchall(f"SELECT * FROM {table}")))
    return "\n".join(parts)


async def test_no_plaintext_number_in_redis_the_spool_or_sql(
    log_settings: Settings, index: ConsentIndex, store: LogStore, tmp_path: Path
) -> None:
    gate = Gate(log_settings, index, make_outbox(log_settings, index, tmp_path), budget=2.0, clock=pinned())
    await decide(gate, CALLS)
    # Some of them spooled by a process that cannot reach Redis.
    dead = ConsentIndex(
        connect(dataclasses.replace(log_settings.index, redis_url=f"redis://127.0.0.1:{free_port()}/0")), index.keys
    )
    try:
        offline = Gate(log_settings, dead, make_outbox(log_settings, dead, tmp_path), budget=2.0, clock=pinned())
        await decide(offline, CALLS)
    finally:
        await dead.close()
    spool = Spool(tmp_path, INSTANCE)
    assert spool.count() == len(CALLS)
    spooled = spool.path.read_bytes()
    redis_before = await redis_dump(index.client, log_settings.index.prefix)
    assert b"****5678" in redis_before and b"****5678" in spooled  # the masked form is there…
    await make_outbox(log_settings, index, tmp_path).replay()
    shipper = make_shipper(log_settings, store)
    try:
        assert await shipper.ship_once() == 2 * len(CALLS)
    finally:
        await shipper.client.aclose()
    await store.add_audit("alice", "compliance", "objection", number_hash="ab" * 16, details={"tenant": "acme"})
    sql_text = await sql_dump(store)
    assert "****5678" in sql_text
    redis_after = await redis_dump(index.client, log_settings.index.prefix)
    for digits in DIGITS:  # …the number itself nowhere
        for blob in (redis_before, spooled, redis_after, sql_text.encode()):
            assert digits.encode() not in blob


async def test_a_crash_between_commit_and_acknowledgement_loses_and_duplicates_nothing(
    log_settings: Settings, index: ConsentIndex, store: LogStore, tmp_path: Path
) -> None:
    outbox = make_outbox(log_settings, index, tmp_path)
    records = synthetic(10)
    for r in records:
        await outbox.keep(r)
    first = make_shipper(log_settings, store, batch=4)

    async def crash(stage: Stage) -> None:
        if stage is Stage.COMMITTED:
            raise Crash

    first.fault = crash
    try:
        with pytest.raises(Crash):
            await first.ship_once()
        assert await store.count() == 4  # committed…
        assert await stream_state(first) == (10, 4)  # …but still in the stream, read and unacknowledged
    finally:
        await first.client.aclose()
    second = make_shipper(log_settings, store, batch=4)  # the restarted process, same consumer name
    try:
        assert await second.ship_once() == 6
        assert second.duplicates == 4
        assert await stream_state(second) == (0, 0)
    finally:
        await second.client.aclose()
    await assert_exactly_once(store, [r.decision_id for r in records])


async def test_a_crash_between_read_and_insert_loses_nothing(
    log_settings: Settings, index: ConsentIndex, store: LogStore, tmp_path: Path
) -> None:
    outbox = make_outbox(log_settings, index, tmp_path)
    records = synthetic(7)
    for r in records:
        await outbox.keep(r)
    first = make_shipper(log_settings, store, batch=3)

    async def crash(stage: Stage) -> None:
        if stage is Stage.READ:
            raise Crash

    first.fault = crash
    try:
        with pytest.raises(Crash):
            await first.ship_once()
        assert await store.count() == 0
        assert await stream_state(first) == (7, 3)
    finally:
        await first.client.aclose()
    second = make_shipper(log_settings, store, batch=3)
    try:
        assert await second.ship_once() == 7 and second.duplicates == 0
    finally:
        await second.client.aclose()
    await assert_exactly_once(store, [r.decision_id for r in records])


async def test_a_running_shipper_cancelled_after_commit_is_replaced_without_duplicates(
    log_settings: Settings, index: ConsentIndex, store: LogStore, tmp_path: Path
) -> None:
    outbox = make_outbox(log_settings, index, tmp_path)
    records = synthetic(25)
    for r in records[:5]:
        await outbox.keep(r)
    first = make_shipper(log_settings, store)
    committed, never = asyncio.Event(), asyncio.Event()

    async def hang(stage: Stage) -> None:
        if stage is Stage.COMMITTED:
            committed.set()
            await never.wait()  # the process freezes here and is then killed

    first.fault = hang
    await first.start()
    try:
        async with asyncio.timeout(10):
            await committed.wait()
    finally:
        await first.stop()
        await first.client.aclose()
    assert await store.count() == 5
    for r in records[5:]:
        await outbox.keep(r)
    second = make_shipper(log_settings, store)
    await second.start()
    try:

        async def all_shipped() -> bool:
            return await store.count() == 25 and await stream_state(second) == (0, 0)

        await eventually(all_shipped, "the second shipper to ship everything")
        assert second.duplicates == 5
    finally:
        await second.stop()
        await second.client.aclose()
    await assert_exactly_once(store, [r.decision_id for r in records])


async def test_postgresql_stopped_and_restarted_during_a_stream_of_decisions(
    settings: Settings, index: ConsentIndex, tmp_path: Path
) -> None:
    pg = PrivatePostgres()  # its own server: this test stops it
    await asyncio.to_thread(pg.__enter__)
    try:
        log_settings = dataclasses.replace(settings, log=LogSettings(dsn=pg.dsn, instance=INSTANCE))
        store = await LogStore.from_dsn(pg.dsn).open()
        outbox = make_outbox(log_settings, index, tmp_path)
        shipper = make_shipper(log_settings, store, batch=50)
        records = synthetic(500)
        await shipper.start()

        async def produce(part: list[DecisionRecord]) -> None:
            for r in part:
                await outbox.keep(r)

        try:
            await asyncio.gather(produce(records[:200]), asyncio.to_thread(pg.stop))  # stops mid-stream
            await produce(records[200:300])  # while the database is down

            async def failing() -> bool:
                return shipper.last_error is not None

            await eventually(failing, "the shipper to notice that PostgreSQL is down")
            assert (await shipper.readiness()).ok  # records are safe in the stream: still ready, retrying
            assert "retrying" in (await shipper.readiness()).detail
            shipper.unready_after = 0.0  # …until it has failed for too long
            check = await shipper.readiness()
            assert not check.ok and "not shipping" in check.detail and "waiting in the outbox" in check.detail
            await asyncio.gather(produce(records[300:]), asyncio.to_thread(pg.start))

            async def all_shipped() -> bool:
                return shipper.last_error is None and await store.count() == len(records)

            await eventually(all_shipped, "every record in PostgreSQL")
            await assert_exactly_once(store, [r.decision_id for r in records])
            assert await stream_state(shipper) == (0, 0)
        finally:
            await shipper.stop()
            await shipper.client.aclose()
            await store.close()
    finally:
        await asyncio.to_thread(pg.cleanup)


async def test_redis_down_spools_and_the_spool_is_replayed_exactly_once(log_settings: Settings, tmp_path: Path) -> None:
    redis = PrivateRedis()
    await asyncio.to_thread(redis.start)
    private = make_settings(redis.url, prefix="gk")
    settings = dataclasses.replace(private, log=log_settings.log)
    index = ConsentIndex.from_settings(settings.index)
    store = await LogStore.from_dsn(settings.log.dsn).open()
    outbox = make_outbox(settings, index, tmp_path)
    gate = Gate(settings, index, outbox, budget=2.0, clock=pinned())
    shipper = make_shipper(settings, store)
    try:
        before = await decide(gate, CALLS[:3])
        assert await shipper.ship_once() == 3
        await asyncio.to_thread(redis.stop)
        during = await decide(gate, CALLS)  # fail closed, recorded in the spool
        assert Reason.INDEX_UNAVAILABLE in {r.reason for r in during}
        assert outbox.spooling and outbox.spooled == len(CALLS)
        assert "spooled" in (await outbox.readiness()).detail
        spooled_lines = outbox.spool.path.read_bytes()
        await outbox.start()
        await shipper.start()
        await asyncio.to_thread(redis.start)  # the same port, empty (no persistence): stream and group are gone

        async def replayed_and_shipped() -> bool:
            return not outbox.spooling and outbox.spool.count() == 0 and await store.count() == 3 + len(CALLS)

        await eventually(replayed_and_shipped, "the spool replayed and shipped")
        after = await decide(gate, CALLS[:2])  # back to the stream
        assert outbox.appended == 3 + 2

        async def shipped_after() -> bool:
            return await store.count() == 5 + len(CALLS)

        await eventually(shipped_after, "the decisions after the outage shipped")
        # A crash mid-replay would replay the same lines again: still stored once.
        (tmp_path / f"gatekeeper-outbox-{INSTANCE}.replay-1.jsonl").write_bytes(spooled_lines)
        assert await outbox.replay() == len(CALLS)

        async def duplicates_skipped() -> bool:
            return shipper.duplicates == len(CALLS) and await stream_state(shipper) == (0, 0)

        await eventually(duplicates_skipped, "the replayed duplicates to be skipped")
        await assert_exactly_once(store, [r.decision_id for r in before + during + after])
    finally:
        await outbox.stop()
        await shipper.stop()
        await shipper.client.aclose()
        await store.close()
        await index.close()
        await asyncio.to_thread(redis.stop)


async def test_keep_raises_when_nothing_can_take_the_record(
    log_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("")
    client = connect(dataclasses.replace(log_settings.index, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        outbox = Outbox(client, OutboxKeys("gk", INSTANCE), Spool(tmp_path / "file" / "spool", INSTANCE))
        record = synthetic(1)[0]
        with pytest.raises(EvidenceError, match="spool"):
            await outbox.keep(record)  # Redis refused, the spool directory cannot exist
        assert outbox.spooling and outbox.spooled == 0
        assert f"decision {record.decision_id} not kept" in caplog.text
    finally:
        await client.aclose()


async def test_a_malformed_outbox_entry_is_kept_as_a_dead_letter(
    log_settings: Settings, index: ConsentIndex, store: LogStore, tmp_path: Path
) -> None:
    outbox = make_outbox(log_settings, index, tmp_path)
    good = synthetic(2)
    await outbox.keep(good[0])
    await index.client.xadd(outbox.keys.stream, {RECORD_FIELD: b'{"v": 99}'})
    await index.client.xadd(outbox.keys.stream, {b"other": b"junk"})
    await outbox.keep(good[1])
    shipper = make_shipper(log_settings, store)
    try:
        assert await shipper.ship_once() == 2
        assert await stream_state(shipper) == (0, 0)
    finally:
        await shipper.client.aclose()
    async with store.db.transaction(write=False) as tx:
        dead = await tx.fetchall("SELECT payload, error FROM dead_letters ORDER BY stream_id")
    assert [(json.loads(p), "version" in e) for p, e in dead] == [
        ({"r": '{"v": 99}'}, True),
        ({"other": "junk"}, False),
    ]
    await assert_exactly_once(store, [r.decision_id for r in good])


async def test_check_record_then_log_commands(
    log_settings: Settings, index: ConsentIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the default spool directory for PostgreSQL
    gate = command_gate(log_settings, index, budget=2.0, clock=pinned())
    results = await decide(gate, CALLS[:3])
    out, err = io.StringIO(), io.StringIO()
    assert await log_ship_once(log_settings, out=out, err=err) == 0, err.getvalue()
    assert f"shipped 3 decision record(s) from {log_settings.index.prefix}:outbox:{INSTANCE}" in out.getvalue()
    # A decision spooled by `check --record` while Redis was away is replayed by the next `log ship --once`.
    dead = ConsentIndex(
        connect(dataclasses.replace(log_settings.index, redis_url=f"redis://127.0.0.1:{free_port()}/0")), index.keys
    )
    try:
        offline = command_gate(log_settings, dead, budget=2.0, clock=pinned())
        results += await decide(offline, CALLS[:1])
    finally:
        await dead.close()
    out = io.StringIO()
    assert await log_ship_once(log_settings, out=out, err=err) == 0, err.getvalue()
    assert "replayed 1 spooled record(s); shipped 1 decision record(s)" in out.getvalue()
    out = io.StringIO()
    assert await log_verify(log_settings, out=out, err=err) == 0
    assert f"instance {INSTANCE}: 4 records verified" in out.getvalue() and "chain intact" in out.getvalue()
    parser = argparse.ArgumentParser()
    add_log_parser(parser.add_subparsers(dest="command"))
    for argv in (["log", "ship", "--once"], ["log", "verify"], ["log", "purge"]):  # as `gatekeeper.cli` runs them
        assert await cmd_log(log_settings, parser.parse_args(argv)) == 0
    store = await LogStore.from_dsn(log_settings.log.dsn).open()
    try:
        await assert_exactly_once(store, [r.decision_id for r in results])
        async with store.db.transaction(write=True) as tx:
            await tx.execute("UPDATE decisions SET explanation = 'edited' WHERE seq = 2")
    finally:
        await store.close()
    out = io.StringIO()
    assert await log_verify(log_settings, out=out, err=err) == 1
    assert "CHAIN BROKEN" in out.getvalue() and f"instance {INSTANCE}, seq 2" in out.getvalue()
    out = io.StringIO()
    assert await log_purge(log_settings, days=0, out=out, err=(err := io.StringIO())) == 1
    assert "purged 1 decision record(s)" in out.getvalue() and "seq 2" in err.getvalue()
    assert await log_purge(log_settings, days=-1, out=out, err=err) == 2


async def test_commands_report_an_unreachable_database(settings: Settings, tmp_path: Path) -> None:
    dsn = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    broken = dataclasses.replace(settings, log=LogSettings(dsn=dsn, instance=INSTANCE))
    err = io.StringIO()
    assert await log_verify(broken, out=io.StringIO(), err=err) == 3
    assert "PostgreSQL postgresql://nobody@127.0.0.1" in err.getvalue() and "unavailable" in err.getvalue()
    assert await log_ship_once(broken, spool_dir=tmp_path, out=io.StringIO(), err=(err := io.StringIO())) == 3


async def test_the_group_is_created_again_when_redis_lost_the_stream(
    log_settings: Settings, index: ConsentIndex, store: LogStore, tmp_path: Path
) -> None:
    outbox = make_outbox(log_settings, index, tmp_path)
    shipper = make_shipper(log_settings, store)
    try:
        first, second = synthetic(1), synthetic(1)
        await outbox.keep(first[0])
        assert await shipper.ship_once() == 1
        await index.client.delete(outbox.keys.stream)  # a Redis restart without persistence
        await outbox.keep(second[0])
        assert await shipper.ship_once() == 1
        groups = await index.client.xinfo_groups(outbox.keys.stream)
        assert [g["name"] for g in groups] == [b"shipper"]
    finally:
        await shipper.client.aclose()
    await assert_exactly_once(store, [first[0].decision_id, second[0].decision_id])


async def test_wired_into_the_service(log_settings: Settings, tmp_path: Path) -> None:
    """The composition root's wiring: the gate records to the outbox, the outbox and shipper are components."""
    settings = dataclasses.replace(
        log_settings,
        http=HttpSettings(listen=Address("127.0.0.1", 0)),
        log=dataclasses.replace(log_settings.log, spool_dir=tmp_path),
    )
    service = build_service(settings, registry=CollectorRegistry(), clock=pinned())
    outbox = next(c for c in service.components if isinstance(c, Outbox))
    shipper = next(c for c in service.components if isinstance(c, Shipper))
    assert service.gate.recorder is outbox
    shipper.block = 0.05
    await service.start()
    try:
        results = [await service.gate.check(call) for call in CALLS[:3]]
        reader = await LogStore.from_dsn(settings.log.dsn).open()
        try:

            async def shipped() -> bool:
                return await reader.count() == 3

            await eventually(shipped, "the service's shipper to ship the decisions")
            await assert_exactly_once(reader, [r.decision_id for r in results])
        finally:
            await reader.close()
        async with ClientSession() as http, http.get(f"http://127.0.0.1:{service.http_port}/readyz") as response:
            checks = (await response.json())["checks"]
        assert checks["log"]["ok"] and "waiting in the outbox" in checks["log"]["detail"]
        assert checks["outbox"]["ok"] and "appending to" in checks["outbox"]["detail"]
    finally:
        await service.stop()


async def test_the_shipper_in_a_process_of_its_own(redis_server: PrivateRedis, tmp_path: Path) -> None:
    """`[log] ship_in_serve = false`: serve only appends; `gatekeeper log ship` ships until SIGTERM."""
    dsn = f"sqlite:///{tmp_path}/separate.db"
    settings = make_settings(
        redis_server.url, sections={"log": {"dsn": dsn, "instance": "sep", "ship_in_serve": False}}
    )
    service = build_service(settings, registry=CollectorRegistry(), clock=pinned())
    assert "log" not in {c.name for c in service.components}
    await service.start()
    try:
        results = await decide(service.gate, CALLS[:3])
    finally:
        await service.stop()
    config = tmp_path / "ship.toml"
    config.write_text(
        f'[index]\nredis_url = "{redis_server.url}"\npepper = "{PEPPER}"\nprefix = "{settings.index.prefix}"\n'
        f'[log]\ndsn = "{dsn}"\ninstance = "sep"\nship_in_serve = false\n'
    )
    shipper = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for with to_thread
        [sys.executable, "-m", "gatekeeper.cli", "--config", str(config), "log", "ship"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    store = await LogStore.from_dsn(dsn).open()
    try:
        async with asyncio.timeout(20):
            while await store.count() < len(results):  # noqa: ASYNC110 - the shipper is another process
                await asyncio.sleep(0.05)
        shipper.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(shipper.wait, 20) == 0
        await assert_exactly_once(store, [r.decision_id for r in results])
    finally:
        if shipper.poll() is None:
            shipper.kill()
            shipper.wait()
        await store.close()


async def _first_shipping_warning(shipper: Shipper, caplog: pytest.LogCaptureFixture) -> str:
    """Run the shipper until its first failure and return the warning it logged for it."""
    caplog.set_level(logging.WARNING, logger="gatekeeper.log.shipper")
    shipper.block, shipper.retry_initial, shipper.retry_max = 0.05, 0.02, 0.1
    await shipper.start()

    async def failing() -> bool:
        return shipper.last_error is not None

    try:
        await eventually(failing, "the shipper to fail")
    finally:
        await shipper.stop()
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cannot ship")]
    assert len(warnings) == 1, warnings
    return warnings[0]


async def test_the_warning_names_redis_when_redis_is_unreachable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    redis = PrivateRedis()
    await asyncio.to_thread(redis.start)
    try:
        settings = dataclasses.replace(
            make_settings(redis.url), log=LogSettings(dsn=f"sqlite:///{tmp_path / 'decisions.db'}", instance=INSTANCE)
        )
        shipper = Shipper.from_settings(settings)
        assert await shipper.ship_once() == 0  # both sides reachable
        await asyncio.to_thread(redis.stop)
        warning = await _first_shipping_warning(shipper, caplog)
    finally:
        await asyncio.to_thread(redis.stop)
    assert warning.startswith(f"cannot ship the decision log: Redis at {redis.url} is unreachable (ConnectionError")
    assert "SQLite" not in warning and "decisions.db" not in warning
    assert f"Redis at {redis.url}" in str(shipper.last_error)


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
async def test_the_warning_names_the_database_when_the_database_is_unreachable(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    if kind == "postgresql":
        dsn, where = f"postgresql://nobody@127.0.0.1:{free_port()}/none", "PostgreSQL postgresql://nobody@127.0.0.1"
    else:
        dsn, where = f"sqlite:///{tmp_path / 'missing-dir' / 'decisions.db'}", "SQLite file "
    shipper = Shipper.from_settings(dataclasses.replace(settings, log=LogSettings(dsn=dsn, instance=INSTANCE)))
    warning = await _first_shipping_warning(shipper, caplog)
    blamed, _, waiting = warning.partition("; retrying")
    assert blamed.startswith(f"cannot ship the decision log to {where}")
    assert "Redis" not in blamed and settings.index.redacted_url not in blamed
    assert "the records wait in Redis" in waiting
    assert str(shipper.last_error).startswith(where)


@pytest.mark.parametrize("log_settings", ["sqlite"], indirect=True)
async def test_purge_names_its_cutoff_in_the_deployments_zone(log_settings: Settings) -> None:
    out = io.StringIO()
    assert await log_purge(log_settings, days=30, out=out, err=io.StringIO()) == 0
    amsterdam = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (CET \(\+01:00\)|CEST \(\+02:00\))"  # [numbers] default_region NL
    assert re.fullmatch(rf"purged 0 decision record\(s\) from before {amsterdam} \(30 days kept\)\n", out.getvalue())
