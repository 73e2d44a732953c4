"""The consent index against a real redis-server: keys, round trips, generations, write-through."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from gatekeeper.core.model import Consent, Objection
from gatekeeper.devservers import PrivateRedis
from gatekeeper.index import codec
from gatekeeper.index.keys import ALL_TAGS, TAGS, Generation, Keyspace
from gatekeeper.index.loader import ImportRefused, Loader
from gatekeeper.index.rows import WarningKind
from gatekeeper.index.store import LOCK_TTL, ConsentIndex, TenantLock, is_unavailable
from tests.conftest import write_csv

NOW = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
pytestmark = pytest.mark.integration


async def keys_of(index: ConsentIndex) -> list[bytes]:
    return sorted([k async for k in index.client.scan_iter(match=f"{index.keys.prefix}:*", count=5000)])


async def test_import_then_lookup(index: ConsentIndex, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "a.csv",
        [
            "acme,0612345678,consent,2025-01-01,,form-1",
            "acme,06 1234 5678,consent,2025-01-01,,form-1",  # the same fact twice is stored once
            "acme,+31612345678,objection,2025-06-02,,call",
            "other,0612345678,customer,2020-01-01,2024-01-01,",
            ",0612345690,suppression,2025-10-01,,complaint",
        ],
    )
    report = await Loader(index).load(path, region="NL", now=NOW)
    assert (report.rows, report.accepted, report.error_count) == (5, 5, 0)
    assert report.tenants["acme"].records_created == 1 and report.tenants["acme"].entries_added == 2
    found = await index.lookup("acme", "+31612345678")
    assert found.facts.consents == (Consent(dt.date(2025, 1, 1), None, "form-1"),)
    assert found.facts.objections == (Objection(dt.date(2025, 6, 2), "call"),)
    assert found.generation == report.tenants["acme"].generation
    other = await index.lookup("other", "+31612345678")
    assert other.facts.consents == () and len(other.facts.relationships) == 1
    assert (await index.lookup("acme", "+31612345690")).facts.suppressions[0].reference == "complaint"
    assert not (await index.lookup("nobody", "+31612345678")).facts


async def test_no_plaintext_number_in_redis(index: ConsentIndex, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", ["acme,0612345678,consent,2025-01-01,,form-1"])
    await Loader(index).load(path, region="NL", now=NOW)
    await index.object("acme", "+31612345678", NOW, "desk")
    await index.erase("+31612345679", NOW)
    for key in await keys_of(index):
        assert b"612345678" not in key and b"612345679" not in key
        kind = await index.client.type(key)
        if kind == b"hash":
            for field, value in (await index.client.hgetall(key)).items():
                for needle in (b"612345678", b"612345679", b"0612", b"+316"):
                    assert needle not in field and needle not in value


async def test_exact_keys_left_behind(index: ConsentIndex, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", ["acme,0612345678,consent,2025-01-01,,form-1"])
    report = await Loader(index).load(path, region="NL", now=NOW)
    gen = report.tenants["acme"].generation
    key = index.keys.number_key("+31612345678")
    p = index.keys.prefix
    expected = {f"{p}:genseq", f"{p}:tenants", f"{p}:{{{key.tag}}}:d:acme:{gen}:0"} | {
        f"{p}:{{{tag}}}:g" for tag in ALL_TAGS
    }
    assert {k.decode() for k in await keys_of(index)} == expected
    assert await index.client.ttl(f"{p}:{{{key.tag}}}:d:acme:{gen}:0") == -1
    assert await index.client.hget(index.keys.pointer(key.tag), "acme") == f"{gen}:0".encode()
    assert len(key.field) == 10 and len(ALL_TAGS) == TAGS == 4096


async def test_one_round_trip_per_lookup(index: ConsentIndex, redis_server: PrivateRedis, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [f"acme,06123456{i:02d},consent,2025-01-01,," for i in range(20)])
    await Loader(index).load(path, region="NL", now=NOW)
    await index.warm()
    await index.lookup("acme", "+31612345600")  # connection set-up happens here, not in what we count
    monitor_client = aioredis.Redis.from_url(redis_server.url)
    events: list[dict[str, Any]] = []
    async with monitor_client.monitor() as monitor:

        async def collect() -> None:
            async for event in monitor.listen():
                events.append(event)

        task = asyncio.create_task(collect())

        async def marker(text: str) -> None:
            while not any(text in e["command"] for e in events):
                await index.client.echo(text)
                await asyncio.sleep(0.01)

        await asyncio.wait_for(marker("start-marker"), 5)
        for i in range(10):
            await index.lookup("acme", f"+316123456{i:02d}")
        await asyncio.wait_for(marker("end-marker"), 5)
        task.cancel()
    await monitor_client.aclose()
    commands = [e["command"] for e in events if e.get("client_type") != "lua"]
    start = max(i for i, c in enumerate(commands) if "start-marker" in c)
    end = min(i for i, c in enumerate(commands) if "end-marker" in c)
    client_commands = commands[start + 1 : end]
    assert len(client_commands) == 10, client_commands
    assert all(c.startswith("EVALSHA") for c in client_commands)


async def test_objection_write_through_blocks_next_lookup_and_survives_snapshot(
    index: ConsentIndex, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "a.csv", ["acme,0612345678,consent,2025-01-01,,form-1"])
    await Loader(index).load(path, region="NL", replace=True, now=NOW)
    other_instance = ConsentIndex(index.client, index.keys)  # a second gatekeeper sharing the index
    await other_instance.lookup("acme", "+31612345678")
    await index.object("acme", "+31612345678", NOW, "desk")
    found = await other_instance.lookup("acme", "+31612345678")
    assert [o.reference for o in found.facts.objections] == ["desk"]
    await Loader(index).load(path, region="NL", replace=True, now=NOW)
    assert (await other_instance.lookup("acme", "+31612345678")).facts.objections


async def test_erase_removes_facts_everywhere_and_suppresses(index: ConsentIndex, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "a.csv",
        ["acme,0612345678,consent,2025-01-01,,form-1", "other,0612345678,customer,2020-01-01,,c"],
    )
    await Loader(index).load(path, region="NL", now=NOW)
    await index.object("acme", "+31612345678", NOW)
    removed = await index.erase("+31612345678", NOW, "art17-request-7")
    assert removed == 3
    for tenant in ("acme", "other"):
        facts = (await index.lookup(tenant, "+31612345678")).facts
        assert not facts.consents and not facts.relationships and not facts.objections
        assert facts.suppressions[0].reference == "art17-request-7"
    # The next import does not bring the number's facts back in.
    report = await Loader(index).load(path, region="NL", replace=True, now=NOW)
    assert report.tenants["acme"].skipped_suppressed == 1
    assert not (await index.lookup("acme", "+31612345678")).facts.consents


async def test_snapshot_replaces_and_drops_the_old_generation(index: ConsentIndex, tmp_path: Path) -> None:
    first = write_csv(tmp_path / "1.csv", [f"acme,06123456{i:02d},consent,2025-01-01,," for i in range(50)])
    r1 = await Loader(index).load(first, region="NL", replace=True, now=NOW)
    second = write_csv(tmp_path / "2.csv", ["acme,0612345699,consent,2025-02-02,,new"])
    r2 = await Loader(index).load(second, region="NL", replace=True, now=NOW)
    g1, g2 = r1.tenants["acme"].generation, r2.tenants["acme"].generation
    assert g2 is not None and g1 is not None and g2 > g1
    assert not (await index.lookup("acme", "+31612345600")).facts
    assert (await index.lookup("acme", "+31612345699")).facts.consents[0].reference == "new"
    keys = [k.decode() for k in await keys_of(index)]
    assert not [k for k in keys if f":d:acme:{g1}:" in k], "old generation keys remain"
    tenants = await index.tenants()
    assert tenants["acme"].generation == g2 and tenants["acme"].records == 1


async def test_merge_import_adds_to_the_current_generation(index: ConsentIndex, tmp_path: Path) -> None:
    r1 = await Loader(index).load(write_csv(tmp_path / "1.csv", ["acme,0612345600,consent,2025-01-01,,a"]),
                                  region="NL", now=NOW)  # fmt: skip
    r2 = await Loader(index).load(write_csv(tmp_path / "2.csv", ["acme,0612345601,consent,2025-01-01,,b"]),
                                  region="NL", now=NOW)  # fmt: skip
    assert r1.tenants["acme"].generation == r2.tenants["acme"].generation
    assert not r2.tenants["acme"].new_generation
    assert (await index.lookup("acme", "+31612345600")).facts and (await index.lookup("acme", "+31612345601")).facts
    assert (await index.tenants())["acme"].records == 2


async def test_generation_switch_under_concurrent_lookups(index: ConsentIndex, tmp_path: Path) -> None:
    """Snapshot A gives every number consent 'A', snapshot B consent 'B'; a lookup sees one or the other."""
    numbers = [f"+3161234{i:04d}" for i in range(2000)]
    a = write_csv(tmp_path / "a.csv", [f"acme,{n},consent,2025-01-01,,A" for n in numbers])
    b = write_csv(tmp_path / "b.csv", [f"acme,{n},consent,2025-01-01,,B" for n in numbers])
    await Loader(index).load(a, region="NL", replace=True, now=NOW)
    reader = ConsentIndex(aioredis.Redis.from_url(_url(index)), index.keys)  # a second connection pool
    stop = asyncio.Event()
    seen: dict[str, int] = {}

    async def look() -> None:
        i = 0
        while not stop.is_set():
            found = await reader.lookup("acme", numbers[i % len(numbers)])
            refs = [c.reference for c in found.facts.consents]
            assert refs in (["A"], ["B"]), refs
            seen[refs[0]] = seen.get(refs[0], 0) + 1
            i += 7

    workers = [asyncio.create_task(look()) for _ in range(4)]
    await Loader(index, batch_rows=300).load(b, region="NL", replace=True, now=NOW)
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*workers)
    await reader.close()
    assert seen.get("A", 0) > 0 and seen.get("B", 0) > 0
    assert (await index.lookup("acme", numbers[5])).facts.consents[0].reference == "B"


def _url(index: ConsentIndex) -> str:
    kwargs: dict[str, Any] = index.client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


async def test_crashed_snapshot_is_cleaned_up_and_never_visible(index: ConsentIndex, tmp_path: Path) -> None:
    good = write_csv(tmp_path / "good.csv", ["acme,0612345600,consent,2025-01-01,,good"])
    await Loader(index).load(good, region="NL", replace=True, now=NOW)
    crash = write_csv(tmp_path / "crash.csv", [f"acme,06123456{i:02d},consent,2025-01-01,,crash" for i in range(60)])
    loader = Loader(index, batch_rows=10)
    calls = 0
    original = loader._send

    async def failing_flush(*args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("simulated crash")
        await original(*args)

    loader._send = failing_flush  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError):
        await loader.load(crash, region="NL", replace=True, now=NOW)
    assert (await index.lookup("acme", "+31612345600")).facts.consents[0].reference == "good"
    state = await index.pointer_state("acme")
    assert all(build is None for _, build in state.values()), "build marker left after an aborted import"
    keys = [k.decode() for k in await keys_of(index)]
    gens = {k.split(":")[4] for k in keys if ":d:acme:" in k}
    assert len(gens) == 1
    # A build marker left by a process that died hard is cleaned by the next import.
    await index.client.hset(index.keys.pointer(ALL_TAGS[0]), "acme#b", Generation(999, 0).encode())
    await index.client.hset(index.keys.data(ALL_TAGS[0], "acme", Generation(999, 0), 0), "x", "y")
    await Loader(index).load(good, region="NL", replace=True, now=NOW)
    assert not await index.client.exists(index.keys.data(ALL_TAGS[0], "acme", Generation(999, 0), 0))


async def test_strict_refuses_the_whole_file(index: ConsentIndex, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", ["acme,0612345600,consent,2025-01-01,,a", "acme,12,consent,2025-01-01,,b",
                                          ",0612345601,suppression,,,x"])  # fmt: skip
    report = await Loader(index).load(path, region="NL", strict=True, now=NOW)
    assert report.refused and report.error_count == 1 and report.errors[0].line == 3
    assert await keys_of(index) == []
    lenient = await Loader(index).load(path, region="NL", now=NOW)
    assert (lenient.accepted, lenient.error_count) == (2, 1)


async def test_concurrent_imports_of_one_tenant_are_refused(index: ConsentIndex, tmp_path: Path) -> None:
    await index.client.set(index.keys.lock("acme"), "someone-else", ex=60)
    path = write_csv(tmp_path / "a.csv", ["acme,0612345600,consent,2025-01-01,,a"])
    with pytest.raises(ImportRefused, match="another import of tenant 'acme'"):
        await Loader(index).load(path, region="NL", now=NOW)


async def test_long_records_spill_and_stay_readable(index: ConsentIndex, tmp_path: Path) -> None:
    rows = [f"acme,0612345600,consent,2025-01-{d:02d},,{'r' * 30}{d}" for d in range(1, 6)]
    await Loader(index).load(write_csv(tmp_path / "a.csv", rows), region="NL", now=NOW)
    found = await index.lookup("acme", "+31612345600")
    assert len(found.facts.consents) == 5
    key = index.keys.number_key("+31612345600")
    gen = index.generation("acme")
    assert gen is not None
    assert await index.client.hget(index.keys.data(key.tag, "acme", gen, key.sub(gen.sub_bits)), key.field) == b"\x00"
    encoding = await index.client.object("encoding", index.keys.data(key.tag, "acme", gen, 0))
    assert encoding == b"listpack"


async def test_scripts_reload_after_a_script_flush(index: ConsentIndex, tmp_path: Path) -> None:
    await Loader(index).load(write_csv(tmp_path / "a.csv", ["acme,0612345600,consent,2025-01-01,,a"]),
                             region="NL", now=NOW)  # fmt: skip
    await index.client.script_flush()
    assert (await index.lookup("acme", "+31612345600")).facts
    await index.client.script_flush()
    assert (await index.lookup_many("acme", ["+31612345600", "+31612345601"]))[0].facts


async def test_lookup_many_matches_lookup(index: ConsentIndex, tmp_path: Path) -> None:
    rows = [f"acme,06123456{i:02d},consent,2025-01-01,,r{i}" for i in range(0, 40, 2)]
    await Loader(index).load(write_csv(tmp_path / "a.csv", rows), region="NL", now=NOW)
    numbers = [f"+316123456{i:02d}" for i in range(40)]
    many = await index.lookup_many("acme", numbers)
    for number, found in zip(numbers, many, strict=True):
        assert found.facts == (await index.lookup("acme", number)).facts


async def test_a_dead_redis_raises_a_clear_unavailable_error() -> None:
    with PrivateRedis() as server:
        url = server.url
    dead = ConsentIndex(aioredis.Redis.from_url(url, socket_connect_timeout=0.2), Keyspace("t", b"p" * 16))
    with pytest.raises(Exception) as info:
        await dead.lookup("acme", "+31612345600")
    assert is_unavailable(info.value)
    await dead.close()


def test_entry_codec_is_small() -> None:
    entry = codec.entry(codec.Kind.CONSENT, dt.date(2025, 1, 1), None, "webform/2025/000123")
    assert len(entry) == 10 + 19


async def test_upsert_writes_through_and_survives_a_snapshot_in_progress(index: ConsentIndex, tmp_path: Path) -> None:
    consent = codec.entry(codec.Kind.CONSENT, dt.date(2025, 1, 1), None, "api-1")
    first = await index.upsert("fresh", "+31612345600", [consent])  # a tenant without data: first generation
    assert first.created and first.added == 1 and not first.suppressed
    assert (await index.lookup("fresh", "+31612345600")).facts.consents[0].reference == "api-1"
    assert (await index.upsert("fresh", "+31612345600", [consent])).added == 0  # idempotent
    assert (await index.tenants())["fresh"].records == 1
    # A snapshot import being built: the upsert lands in both generations, so the switch keeps it.
    loader = Loader(index, batch_rows=1)
    original = loader._send
    gate_open = asyncio.Event()
    proceed = asyncio.Event()

    async def paused(*args: Any) -> None:
        gate_open.set()
        await proceed.wait()
        await original(*args)

    loader._send = paused  # type: ignore[method-assign,assignment]
    path = write_csv(tmp_path / "s.csv", ["fresh,0612345601,consent,2025-01-01,,snap"])
    task = asyncio.create_task(loader.load(path, region="NL", replace=True, now=NOW))
    await asyncio.wait_for(gate_open.wait(), 5)
    await index.upsert("fresh", "+31612345602", [codec.entry(codec.Kind.CONSENT, dt.date(2025, 2, 2), None, "during")])
    proceed.set()
    await asyncio.wait_for(task, 10)
    assert (await index.lookup("fresh", "+31612345602")).facts.consents[0].reference == "during"
    assert (await index.lookup("fresh", "+31612345601")).facts.consents[0].reference == "snap"
    assert not (await index.lookup("fresh", "+31612345600")).facts  # not in the snapshot: replaced
    await index.erase("+31612345603", NOW)
    assert (await index.upsert("fresh", "+31612345603", [consent])).suppressed


@pytest.mark.parametrize("replace", [False, True])
async def test_rejected_rows_create_nothing(index: ConsentIndex, tmp_path: Path, replace: bool) -> None:
    rejected = [
        "belburo,0612345600,consent,2025-01-01,,typo-tenant-bad-number",  # not a number: rejected
        "belburo,0612345601,sometimes,2025-01-01,,",  # not a kind
        "bel buro,0612345602,consent,2025-01-01,,",  # not a tenant name
        "belburo,0612345603,consent,,,",  # no start
    ]
    only_rejected = write_csv(tmp_path / "bad.csv", [rejected[0].replace("0612345600", "06123"), *rejected[1:]])
    report = await Loader(index).load(only_rejected, region="NL", replace=replace, now=NOW)
    assert (report.accepted, report.error_count, report.tenants) == (0, 4, {})
    assert await keys_of(index) == []  # no generation, no pointer hashes, no summary, no generation counter

    mixed = write_csv(tmp_path / "mixed.csv", ["acme,0612345678,consent,2025-01-01,,ok", *rejected[1:]])
    report = await Loader(index).load(mixed, region="NL", replace=replace, now=NOW)
    assert (report.accepted, report.error_count, set(report.tenants)) == (1, 3, {"acme"})
    assert set(await index.tenants()) == {"acme"}
    assert not [k for k in await keys_of(index) if b"buro" in k]
    pointers = await index.pointer_hashes()
    assert {name for pointer in pointers for name in pointer} == {"acme"}


async def test_duplicate_rows_and_future_facts_are_reported(index: ConsentIndex, tmp_path: Path) -> None:
    rows = [
        "acme,0612345678,consent,2025-01-01,,form-1",  # line 2
        "acme,0612345679,consent,2025-01-01,,form-2",  # line 3
        "acme,0612345678,consent,2025-01-01,,form-1",  # line 4: the same as line 2
        "acme,06 1234 5678,consent,2025-01-01,,form-1",  # line 5: the same fact, the number written otherwise
        "acme,0612345678,consent,2025-01-01,,form-1b",  # line 6: another reference: a fact of its own
        "other,0612345678,consent,2025-01-01,,form-1",  # line 7: another tenant
        "acme,0612345679,consent,2030-01-01,,later",  # line 8: starts in 2030
        "acme,0612345679,consent,2025-01-01,,form-2",  # line 9: the same as line 3, in a later batch
        "acme,0612345680,objection,2026-11-29,,tomorrow",  # line 10: tomorrow (the import runs on 2026-11-28)
        "acme,0612345681,objection,2026-11-28,,today",  # line 11: today is not the future
        "acme,0612345682,consent,2026-11-28T12:00:01+00:00,,a second later",  # line 12
        ",0612345690,suppression,,,",  # line 13: now
        ",0612345690,suppression,,,",  # line 14: the same
    ]
    report = await Loader(index, batch_rows=4).load(write_csv(tmp_path / "a.csv", rows), region="NL", now=NOW)
    assert report.accepted == len(rows) and report.error_count == 0
    duplicates = [(w.line, w.message) for w in report.warnings[WarningKind.DUPLICATE]]
    assert duplicates == [
        (4, "the same fact as line 2"),
        (5, "the same fact as line 2"),
        (9, "the same fact as line 3"),
        (14, "the same fact as line 13"),
    ]
    assert report.warning_counts[WarningKind.DUPLICATE] == 4
    future = [(w.line, w.message) for w in report.warnings[WarningKind.FUTURE]]
    assert future == [
        (8, "start 2030-01-01 is later than the import (2026-11-28): this consent counts only from then"),
        (10, "start 2026-11-29 is later than the import (2026-11-28): this objection counts only from then"),
        (12, "start 2026-11-28T12:00:01+00:00 is later than the import (2026-11-28): this consent counts only from "
             "then"),
    ]  # fmt: skip
    assert report.tenants["acme"].records_created == 5  # duplicates are stored once


async def test_erase_lowers_the_record_count(index: ConsentIndex, tmp_path: Path) -> None:
    rows = [f"acme,06123456{i:02d},consent,2025-01-01,,{'long-reference-' * 4}{i}" for i in range(3)]
    rows += ["acme,0612345610,consent,2025-01-01,,short", "other,0612345600,customer,2020-01-01,,c"]
    await Loader(index).load(write_csv(tmp_path / "a.csv", rows), region="NL", replace=True, now=NOW)
    assert {name: info.records for name, info in (await index.tenants()).items()} == {"acme": 4, "other": 1}
    await index.erase("+31612345600", NOW)  # a spilled record of acme and a record of other
    await index.erase("+31612345610", NOW)
    await index.erase("+31612345699", NOW)  # no record anywhere
    assert {name: info.records for name, info in (await index.tenants()).items()} == {"acme": 2, "other": 0}
    await index.erase("+31612345610", NOW)  # twice: counted once
    assert (await index.tenants())["acme"].records == 2


async def test_the_import_lock_expires_soon_after_its_holder_and_is_extended_while_it_runs(
    index: ConsentIndex, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "a.csv", [f"acme,06123456{i:02d},consent,2025-01-01,," for i in range(4)])
    loader = Loader(index, batch_rows=1, lock_ttl=0.6)
    original = loader._send
    sent = 0
    pause = asyncio.Event()
    resume = asyncio.Event()

    async def slow(*args: Any) -> None:
        nonlocal sent
        sent += 1
        if sent == 2:
            pause.set()
            await resume.wait()
        await original(*args)

    loader._send = slow  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(loader.load(path, region="NL", replace=True, now=NOW))
    await asyncio.wait_for(pause.wait(), 5)
    lock = index.keys.lock("acme")
    assert 0 < await index.client.pttl(lock) <= 600
    for _ in range(3):  # three TTLs later, the running import still holds its lock
        with pytest.raises(ImportRefused, match=r"another import of tenant 'acme' is running; if it died, its lock"):
            await Loader(index).load(path, region="NL", now=NOW)
        await asyncio.sleep(0.6)
    resume.set()
    report = await asyncio.wait_for(task, 10)
    assert report.tenants["acme"].records_created == 4 and not await index.client.exists(lock)
    # The default: a lock outlives a dead holder by 15 seconds at most (it was 10 minutes).
    assert TenantLock(index.client, index.keys, "acme").ttl == LOCK_TTL <= 15


async def test_an_import_that_lost_its_lock_stops_before_switching(
    index: ConsentIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = write_csv(tmp_path / "good.csv", ["acme,0612345600,consent,2025-01-01,,good"])
    await Loader(index).load(good, region="NL", replace=True, now=NOW)
    path = write_csv(tmp_path / "a.csv", [f"acme,06123456{i:02d},consent,2025-01-01,,new" for i in range(4)])
    found_gone = asyncio.Event()
    extend = TenantLock.extend

    async def watched(self: TenantLock) -> bool:
        extended = await extend(self)
        if not extended:
            found_gone.set()
        return extended

    monkeypatch.setattr(TenantLock, "extend", watched)
    loader = Loader(index, batch_rows=1, lock_ttl=1.0)
    original = loader._send

    async def stolen(*args: Any) -> None:
        if not found_gone.is_set():  # the lock expired while this process stalled, and another writer took it
            await index.client.set(index.keys.lock("acme"), "someone-else", ex=60)
            await found_gone.wait()  # the next extension finds it gone
        await original(*args)

    loader._send = stolen  # type: ignore[method-assign,assignment]
    with pytest.raises(ImportRefused, match="lost the lock of tenant"):
        await asyncio.wait_for(loader.load(path, region="NL", replace=True, now=NOW), 10)
    assert (await index.lookup("acme", "+31612345600")).facts.consents[0].reference == "good"
    assert await index.client.get(index.keys.lock("acme")) == b"someone-else"  # not released: not ours


async def test_an_import_ends_while_a_lock_extension_hangs_in_redis(
    index: ConsentIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancellation that reaches a Redis command in flight can be swallowed by the client (it was, once in a
    few runs): the import must not wait forever for the task that extends its locks."""
    in_flight = asyncio.Event()
    answer = asyncio.Event()

    async def extension_that_ignores_cancellation(self: TenantLock) -> bool:
        in_flight.set()
        while True:
            try:
                await answer.wait()
                return True
            except asyncio.CancelledError:
                continue  # what the client did with it

    monkeypatch.setattr(TenantLock, "extend", extension_that_ignores_cancellation)
    loader = Loader(index, batch_rows=1, lock_ttl=0.3)
    original = loader._send

    async def after_an_extension(*args: Any) -> None:
        await in_flight.wait()
        await original(*args)

    loader._send = after_an_extension  # type: ignore[method-assign,assignment]
    path = write_csv(tmp_path / "a.csv", ["acme,0612345600,consent,2025-01-01,,a"])
    report = await asyncio.wait_for(loader.load(path, region="NL", replace=True, now=NOW), 5)
    assert report.tenants["acme"].records_created == 1 and not await index.client.exists(index.keys.lock("acme"))
    answer.set()
