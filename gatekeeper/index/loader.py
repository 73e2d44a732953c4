"""Bulk loading: full snapshots that switch generations atomically, and merges into the current one.

A snapshot (`replace=True`) for tenant T is written into a new generation G that no lookup reads; when
the whole file is in, each hash tag is switched to G by one script that also drops the old generation's
keys of that tag. A lookup reads the pointer and the data of its tag inside one script, so it sees either
the old or the new generation, never a mix. A crash leaves a build marker that the next import of the
tenant cleans up. Suppressions are global and always added, never replaced.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatekeeper.index.keys import ALL_TAGS, BUILD_SUFFIX, Generation, Keyspace, sub_bits_for
from gatekeeper.index.rows import ImportFileError, Row, RowError, Validator, read, tenant_counts
from gatekeeper.index.store import (
    APPEND,
    MERGE,
    SWITCH,
    ConsentIndex,
    Pipeline,
    Script,
    TenantInfo,
    run_pipeline,
    text,
)

BATCH_ROWS = 50_000
PIPELINE_CALLS = 2_000
LOCK_SECONDS = 600
MAX_REPORTED_ERRORS = 1_000

_Call = tuple[Script, list[str], list[bytes | str | int], str | None]  # script, keys, args, tenant
Progress = Callable[[int], None]  # called with the number of rows read so far


class ImportRefused(Exception):
    """The import cannot start (lock held, inconsistent index) — nothing was written."""


@dataclass
class TenantResult:
    rows: int = 0
    records_created: int = 0
    entries_added: int = 0
    skipped_suppressed: int = 0
    generation: int | None = None
    new_generation: bool = False  # a snapshot, or the tenant's first data


@dataclass
class ImportReport:
    source: str
    rows: int = 0
    accepted: int = 0
    error_count: int = 0
    errors: list[RowError] = field(default_factory=list)
    error_kinds: Counter[str] = field(default_factory=Counter)
    tenants: dict[str, TenantResult] = field(default_factory=dict)
    suppressions: int = 0
    refused: bool = False
    seconds: float = 0.0

    def add_error(self, error: RowError) -> None:
        self.error_count += 1
        self.error_kinds[f"{error.field}: {error.message.split(' (')[0][:60]}"] += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class _Target:
    """Where one tenant's rows go during this import."""

    tenant: str
    generation: Generation
    pointer_field: str  # "T" (merge into the current generation) or "T#b" (a snapshot being built)
    replace: bool
    lock_token: str


class Loader:
    def __init__(self, index: ConsentIndex, *, value_limit: int | None = None, batch_rows: int = BATCH_ROWS) -> None:
        self.index = index
        self.client = index.client
        self.keys: Keyspace = index.keys
        self.value_limit = value_limit
        self.batch_rows = batch_rows

    async def _limit(self) -> int:
        if self.value_limit is None:
            try:
                reply: dict[Any, Any] = await self.client.config_get("hash-max-listpack-value")
                self.value_limit = int(text(next(iter(reply.values())))) if reply else 64
            except Exception:  # managed Redis may forbid CONFIG; Redis' default then applies
                self.value_limit = 64
        return self.value_limit

    # -- public --------------------------------------------------------------------------------------

    async def load(
        self,
        path: Path,
        *,
        region: str,
        replace: bool = False,
        strict: bool = False,
        now: dt.datetime | None = None,
        progress: Progress | None = None,
        source_name: str | None = None,
    ) -> ImportReport:
        started = time.perf_counter()
        now = now or dt.datetime.now(dt.UTC)
        report = ImportReport(source=source_name if source_name is not None else path.name)
        validator = Validator(region, now)
        counts = self._prescan(path, validator if strict else None, report)
        if strict and report.error_count:
            report.refused = True
            report.seconds = time.perf_counter() - started
            return report
        report.errors.clear()
        report.error_kinds.clear()
        report.error_count = 0
        targets: dict[str, _Target] = {}
        await self._limit()
        await self.index.load_scripts()
        try:
            for tenant, rows in counts.items():
                targets[tenant] = await self._prepare(tenant, rows, replace)
            await self._stream(path, validator, targets, report, progress)
            for target in targets.values():
                result = report.tenants.setdefault(target.tenant, TenantResult())
                result.generation = target.generation.number
                result.new_generation = target.replace
                if target.replace:
                    await self._switch(target, result, now, report.source)
                else:
                    await self._touch_meta(target, result, now, report.source)
        except BaseException:
            for target in targets.values():
                if target.replace:
                    await asyncio.shield(self._abandon(target))
            raise
        finally:
            for target in targets.values():
                await asyncio.shield(self._unlock(target))
        report.seconds = time.perf_counter() - started
        return report

    # -- phases --------------------------------------------------------------------------------------

    def _prescan(self, path: Path, validator: Validator | None, report: ImportReport) -> Counter[str]:
        """Rows per tenant (to size the new generations); with a validator, every row checked."""
        if validator is None:
            return tenant_counts(path)
        counts: Counter[str] = Counter()
        for item in read(path):
            if isinstance(item, RowError):
                report.add_error(item)
                continue
            line, raw = item
            row = validator.validate(line, raw)
            if isinstance(row, RowError):
                report.add_error(row)
                continue
            tenant = raw.get("tenant", "").strip()
            if raw.get("kind", "").strip().lower() != "suppression" and tenant:
                counts[tenant] += 1
        return counts

    async def _lock(self, tenant: str) -> str:
        token = secrets.token_hex(8)
        if not await self.client.set(self.keys.lock(tenant), token, nx=True, ex=LOCK_SECONDS):
            ttl = await self.client.ttl(self.keys.lock(tenant))
            raise ImportRefused(f"another import of tenant {tenant!r} is running (its lock expires in {ttl} s)")
        return token

    async def _unlock(self, target: _Target) -> None:
        key = self.keys.lock(target.tenant)
        current = await self.client.get(key)
        if current is not None and text(current) == target.lock_token:
            await self.client.delete(key)

    async def _clean_stale_build(self, tenant: str) -> None:
        """Delete what a crashed snapshot import of the tenant left behind (its build marker and keys)."""
        build_field = tenant + BUILD_SUFFIX
        replies = await self.index.pointer_fields([build_field])
        stale = [(tag, Generation.decode(r[0])) for tag, r in zip(ALL_TAGS, replies, strict=True) if r[0]]
        if not stale:
            return

        def fill(pipe: Pipeline) -> None:
            for tag, gen in stale:
                assert gen is not None
                # A raw UNLINK: redis-py's cluster pipeline has no multi-key `unlink` (its method is a coroutine
                # that refuses several keys), but routes a raw one by its keys, all of one hash tag here.
                pipe.execute_command("UNLINK", *self.keys.generation_keys(tag, tenant, gen))
                pipe.hdel(self.keys.pointer(tag), build_field)

        await run_pipeline(self.client, fill)

    async def _prepare(self, tenant: str, rows: int, replace: bool) -> _Target:
        token = await self._lock(tenant)
        try:
            await self._clean_stale_build(tenant)
            current = None if replace else await self._current(tenant)
            if current is not None:
                return _Target(tenant, current, tenant, False, token)
            # A new generation: a snapshot, or the first data of a tenant (nothing to merge into).
            number = int(await self.client.incr(self.keys.genseq))
            gen = Generation(number, sub_bits_for(rows))
            build_field = tenant + BUILD_SUFFIX
            value = gen.encode()

            def fill(pipe: Pipeline) -> None:
                for tag in ALL_TAGS:
                    pipe.hset(self.keys.pointer(tag), build_field, value)

            await run_pipeline(self.client, fill)
            return _Target(tenant, gen, build_field, True, token)
        except BaseException:
            await self._unlock(_Target(tenant, Generation(0, 0), tenant, False, token))
            raise

    async def _current(self, tenant: str) -> Generation | None:
        """The tenant's current generation; refuses when tags disagree (an interrupted switch)."""
        replies = await self.index.pointer_fields([tenant])
        gens = {r[0] for r in replies}
        if len(gens) > 1:
            raise ImportRefused(
                f"tenant {tenant!r} is between two generations (an interrupted snapshot import); "
                "run a snapshot import (--replace) to repair it"
            )
        return Generation.decode(gens.pop()) if gens else None

    async def _stream(
        self,
        path: Path,
        validator: Validator,
        targets: dict[str, _Target],
        report: ImportReport,
        progress: Progress | None,
    ) -> None:
        """Read, validate and group a batch in a worker thread while Redis applies the previous one."""
        limit = await self._limit()
        items = iter(read(path))

        def next_batch() -> list[_Call]:
            rows: list[Row] = []
            for item in items:
                report.rows += 1
                if isinstance(item, RowError):
                    report.add_error(item)
                    continue
                row = validator.validate(*item)
                if isinstance(row, RowError):
                    report.add_error(row)
                    continue
                report.accepted += 1
                rows.append(row)
                if len(rows) >= self.batch_rows:
                    break
            return self._group(rows, targets, report, limit)

        upcoming = asyncio.ensure_future(asyncio.to_thread(next_batch))
        try:
            while calls := await upcoming:
                upcoming = asyncio.ensure_future(asyncio.to_thread(next_batch))
                await self._send(calls, report)
                if progress is not None:
                    progress(report.rows)
        finally:
            if not upcoming.done():
                upcoming.cancel()
                await asyncio.gather(upcoming, return_exceptions=True)

    def _group(self, rows: Iterable[Row], targets: dict[str, _Target], report: ImportReport, limit: int) -> list[_Call]:
        """One script call per bucket, with the entries of every number of the batch that lands in it."""
        grouped: dict[tuple[str, str, int], dict[bytes, bytearray]] = defaultdict(dict)
        suppressions: dict[str, dict[bytes, bytearray]] = defaultdict(dict)
        numbers = self.keys
        for row in rows:
            key = numbers.number_key(row.e164)
            if row.tenant is None:
                bucket = suppressions[key.tag]
                report.suppressions += 1
            else:
                target = targets[row.tenant]
                bucket = grouped[(row.tenant, key.tag, key.sub(target.generation.sub_bits))]
                report.tenants.setdefault(row.tenant, TenantResult()).rows += 1
            existing = bucket.get(key.field)
            if existing is None:
                bucket[key.field] = bytearray(row.entry)
            else:
                existing += row.entry
        calls: list[_Call] = []
        for tag, fields in suppressions.items():
            args: list[bytes | str | int] = []
            for f, entries in fields.items():
                args += [f, bytes(entries)]
            calls.append((APPEND, [numbers.suppressions(tag)], args, None))
        for (tenant, tag, sub), fields in grouped.items():
            target = targets[tenant]
            gen = target.generation
            margs: list[bytes | str | int] = [target.pointer_field, gen.encode(), limit]
            for f, entries in fields.items():
                margs += [f, bytes(entries)]
            keys = [
                numbers.pointer(tag),
                numbers.data(tag, tenant, gen, sub),
                numbers.spill(tag, tenant, gen, sub),
                numbers.suppressions(tag),
            ]
            calls.append((MERGE, keys, margs, tenant))
        return calls

    async def _send(self, calls: list[_Call], report: ImportReport) -> None:
        for start in range(0, len(calls), PIPELINE_CALLS):
            chunk = calls[start : start + PIPELINE_CALLS]
            replies = await self.index.run_scripts([(script, keys, args) for script, keys, args, _ in chunk])
            for (_, _, _, owner), reply in zip(chunk, replies, strict=True):
                if owner is None:
                    continue
                result = report.tenants[owner]
                result.records_created += int(reply[0])
                result.entries_added += int(reply[1])
                result.skipped_suppressed += int(reply[2])

    async def _switch(self, target: _Target, result: TenantResult, now: dt.datetime, source: str) -> None:
        tenant, gen = target.tenant, target.generation
        replies = await self.index.pointer_fields([tenant])
        value = gen.encode()
        build_field = tenant + BUILD_SUFFIX

        def fill(pipe: Pipeline) -> None:
            for tag, reply in zip(ALL_TAGS, replies, strict=True):
                old = Generation.decode(reply[0])
                old_keys = self.keys.generation_keys(tag, tenant, old) if old and old != gen else []
                SWITCH.queue(pipe, [self.keys.pointer(tag), *old_keys], [tenant, value, build_field])

        await run_pipeline(self.client, fill)
        info = TenantInfo(tenant, gen.number, gen.sub_bits, result.records_created, now.isoformat(), source)
        await self.client.hset(self.keys.tenants, tenant, info.to_json())

    async def _touch_meta(self, target: _Target, result: TenantResult, now: dt.datetime, source: str) -> None:
        raw = await self.client.hget(self.keys.tenants, target.tenant)
        records = TenantInfo.from_json(target.tenant, raw).records if raw else 0
        gen = target.generation
        info = TenantInfo(
            target.tenant, gen.number, gen.sub_bits, records + result.records_created, now.isoformat(), source
        )
        await self.client.hset(self.keys.tenants, target.tenant, info.to_json())

    async def _abandon(self, target: _Target) -> None:
        """Drop a snapshot that will not be switched to (strict refusal, error, interruption)."""
        try:
            await self._clean_stale_build(target.tenant)
        except Exception:  # the next import of the tenant cleans up instead
            return


__all__ = ["ImportFileError", "ImportRefused", "ImportReport", "Loader", "TenantResult"]
