"""Bulk loading: full snapshots that switch generations atomically, and merges into the current one.

A snapshot (`replace=True`) for tenant T is written into a new generation G that no lookup reads; when
the whole file is in, each hash tag is switched to G by one script that also drops the old generation's
keys of that tag. A lookup reads the pointer and the data of its tag inside one script, so it sees either
the old or the new generation, never a mix. A journal entry (`Switch`) is written before the first tag
switches and removed after the last: an import killed in between leaves the tenant split between two
generations, which `gatekeeper status`, `/readyz` and the metrics report, and the next import of the
tenant finishes the switch before it does anything else. An import killed before its switch leaves a
build marker that the next import of the tenant cleans up. Suppressions are global and always added,
never replaced.

Only tenants with at least one valid row are touched: rows that are rejected create nothing. Each
tenant's import lock expires seconds after its import dies, because the import extends it as it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatekeeper.index.keys import ALL_TAGS, BUILD_SUFFIX, TAGS, Generation, Keyspace, sub_bits_for
from gatekeeper.index.rows import (
    NO_MAPPING,
    ColumnMap,
    ImportFileError,
    Row,
    RowError,
    RowWarning,
    Validator,
    WarningKind,
    read,
)
from gatekeeper.index.store import (
    APPEND,
    LOCK_TTL,
    MERGE,
    SWITCH,
    ConsentIndex,
    Pipeline,
    Script,
    Switch,
    TenantInfo,
    TenantLock,
    run_pipeline,
    text,
)

BATCH_ROWS = 50_000
PIPELINE_CALLS = 2_000
SWITCH_TAGS_PER_PIPELINE = 512  # tags switched per round trip: Redis serves lookups between the pipelines
MAX_REPORTED_ERRORS = 1_000
MAX_REPORTED_WARNINGS = 1_000  # per kind

_Call = tuple[Script, list[str], list[bytes | str | int], str | None]  # script, keys, args, tenant
Progress = Callable[[int], None]  # called with the number of rows read so far


class ImportRefused(Exception):
    """The import cannot start or go on (lock held or lost, inconsistent index); the message says what was
    written."""


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
    warning_counts: Counter[WarningKind] = field(default_factory=Counter)
    warnings: dict[WarningKind, list[RowWarning]] = field(default_factory=dict)
    tenants: dict[str, TenantResult] = field(default_factory=dict)
    suppressions: int = 0
    repairs: list[str] = field(default_factory=list)  # interrupted switches this import finished first
    refused: bool = False
    seconds: float = 0.0

    def add_error(self, error: RowError) -> None:
        self.error_count += 1
        self.error_kinds[f"{error.field}: {error.message.split(' (')[0][:60]}"] += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)

    def add_warning(self, warning: RowWarning) -> None:
        self.warning_counts[warning.kind] += 1
        shown = self.warnings.setdefault(warning.kind, [])
        if len(shown) < MAX_REPORTED_WARNINGS:
            shown.append(warning)

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
    lock: TenantLock
    switching: bool = False  # its journal is written: from here on the switch is finished, never abandoned


class DuplicateFinder:
    """Finds rows that state a fact an earlier row of the file stated (the same tenant, number, kind, dates
    and reference, however the number was written).

    It remembers a 64-bit digest (Python's hash of the fact: a false match, about one in 10^6 for ten million
    rows, would cost a wrong warning, nothing else) and the line of every fact in a private temporary SQLite
    database, which lives on disk: a file of tens of millions of rows needs no more memory than a small one.
    A batch without repeats costs one insert per row (about 2.5 µs); only a batch with repeats is joined.
    """

    def __init__(self) -> None:
        # "": a temporary database, deleted on close. Batches are checked in a worker thread, one at a time.
        self._db = sqlite3.connect("", check_same_thread=False)
        self._db.execute("CREATE TABLE seen (digest INTEGER PRIMARY KEY, line INTEGER NOT NULL)")
        self._db.execute("CREATE TABLE batch (digest INTEGER NOT NULL, line INTEGER NOT NULL)")
        # An interrupted import closes the finder while a worker thread may still be checking a batch (a
        # cancelled to_thread task does not stop its thread): closing waits for that check, never cuts it.
        self._lock = threading.Lock()

    def check(self, rows: Iterable[Row]) -> list[tuple[int, int]]:
        """(line, earlier line) for each of the rows (in file order) that repeats an earlier fact."""
        firsts: dict[int, int] = {}  # digest -> the first line in this batch
        repeats: list[tuple[int, int]] = []
        for row in rows:
            first = firsts.setdefault(hash((row.tenant, row.e164, row.entry)), row.line)
            if first != row.line:
                repeats.append((row.line, first))
        earlier: dict[int, int] = {}  # the first line in this batch -> the line in an earlier batch
        with self._lock, self._db:
            before = self._db.total_changes
            self._db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", sorted(firsts.items()))
            if self._db.total_changes - before < len(firsts):  # some digests were there already
                self._db.executemany("INSERT INTO batch VALUES (?, ?)", firsts.items())
                query = "SELECT batch.line, seen.line FROM batch JOIN seen USING (digest) WHERE seen.line < batch.line"
                earlier = dict(self._db.execute(query))
                self._db.execute("DELETE FROM batch")
        found = [(line, earlier.get(first, first)) for line, first in repeats]
        found += earlier.items()
        return sorted(found)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Loader:
    def __init__(
        self,
        index: ConsentIndex,
        *,
        value_limit: int | None = None,
        batch_rows: int = BATCH_ROWS,
        lock_ttl: float = LOCK_TTL,
    ) -> None:
        self.index = index
        self.client = index.client
        self.keys: Keyspace = index.keys
        self.value_limit = value_limit
        self.batch_rows = batch_rows
        self.lock_ttl = lock_ttl
        self._lost_locks: set[str] = set()

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
        columns: ColumnMap = NO_MAPPING,
    ) -> ImportReport:
        started = time.perf_counter()
        now = now or dt.datetime.now(dt.UTC)
        report = ImportReport(source=source_name if source_name is not None else path.name)
        validator = Validator(region, now)
        counts = self._prescan(path, columns, validator, strict, report)
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
        self._lost_locks.clear()
        done = asyncio.Event()
        keeper = asyncio.create_task(self._keep_locks(targets, done))
        try:
            for tenant, rows in counts.items():
                targets[tenant] = await self._prepare(tenant, rows, replace, report)
            await self._stream(path, columns, validator, targets, report, progress)
            for target in targets.values():
                result = report.tenants.setdefault(target.tenant, TenantResult())
                result.generation = target.generation.number
                result.new_generation = target.replace
                self._check_locks()
                if target.replace:
                    await self._switch(target, result, now, report.source)
                else:
                    await self._touch_meta(target, result, now, report.source)
        except BaseException:
            for target in targets.values():
                if target.switching:  # its data is all in: finish the switch if Redis lets us
                    await asyncio.shield(self._finish_quietly(target.tenant))
                elif target.replace:
                    await asyncio.shield(self._abandon(target))
            raise
        finally:
            await self._stop_keeping(keeper, done)
            for target in targets.values():
                await asyncio.shield(self._unlock(target))
        report.seconds = time.perf_counter() - started
        return report

    # -- phases --------------------------------------------------------------------------------------

    def _prescan(
        self, path: Path, columns: ColumnMap, validator: Validator, strict: bool, report: ImportReport
    ) -> Counter[str]:
        """Rows per tenant (to size the new generations), for the tenants that have a valid row: a tenant
        named only by rejected rows gets nothing. Strict, every row is checked and the errors reported;
        otherwise only rows of a tenant not yet known to have a valid one."""
        counts: Counter[str] = Counter()
        valid: set[str] = set()
        for item in read(path, columns):
            if isinstance(item, RowError):
                report.add_error(item)
                continue
            line, raw = item
            tenant = raw.get("tenant", "").strip()
            suppression = raw.get("kind", "").strip().lower() == "suppression"
            if strict or not (suppression or tenant in valid):
                row = validator.validate(line, raw)
                if isinstance(row, RowError):
                    report.add_error(row)
                    continue
                if row.tenant is not None:
                    valid.add(row.tenant)
            if not suppression and tenant:
                counts[tenant] += 1
        return Counter({tenant: n for tenant, n in counts.items() if tenant in valid})

    async def _lock(self, tenant: str) -> TenantLock:
        lock = TenantLock(self.client, self.keys, tenant, self.lock_ttl)
        if not await lock.acquire():
            left = await lock.holder_expires_in()
            expiry = f"; if it died, its lock expires in {left:.0f} s" if left is not None else ""
            raise ImportRefused(f"another import of tenant {tenant!r} is running{expiry}")
        return lock

    async def _keep_locks(self, targets: dict[str, _Target], done: asyncio.Event) -> None:
        """Extend every lock this import holds, three times per TTL, until `done`; note the ones found expired.

        It stops on the event rather than by cancellation: a cancellation that arrives while a Redis command
        is in flight can be swallowed by the client, which would leave the import waiting for this task.
        """
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.lock_ttl / 3)
            if done.is_set():
                return
            for target in list(targets.values()):
                with contextlib.suppress(Exception):  # Redis trouble: the import itself fails, or the next try works
                    if not await target.lock.extend():
                        self._lost_locks.add(target.tenant)

    async def _stop_keeping(self, keeper: asyncio.Task[None], done: asyncio.Event) -> None:
        done.set()
        finished, _ = await asyncio.wait([keeper], timeout=self.lock_ttl)
        if not finished:  # an extension stuck in Redis: the lock expires by itself
            keeper.cancel()

    def _check_locks(self) -> None:
        if self._lost_locks:
            raise ImportRefused(
                f"the import lost the lock of tenant(s) {', '.join(sorted(self._lost_locks))}: it was not extended "
                f"for {self.lock_ttl:g} s (Redis unreachable, or this process stalled), so another import may have "
                "started; this one stopped before switching any generation (rows merged so far stay). Run it again."
            )

    async def _unlock(self, target: _Target) -> None:
        await target.lock.release()

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

    async def _prepare(self, tenant: str, rows: int, replace: bool, report: ImportReport) -> _Target:
        lock = await self._lock(tenant)
        try:
            repaired = await self._finish_interrupted_switch(tenant, replace)
            if repaired:
                report.repairs.append(repaired)
            await self._clean_stale_build(tenant)
            current = None if replace else await self._current(tenant)
            if current is not None:
                return _Target(tenant, current, tenant, False, lock)
            # A new generation: a snapshot, or the first data of a tenant (nothing to merge into).
            number = int(await self.client.incr(self.keys.genseq))
            gen = Generation(number, sub_bits_for(rows))
            build_field = tenant + BUILD_SUFFIX
            value = gen.encode()

            def fill(pipe: Pipeline) -> None:
                for tag in ALL_TAGS:
                    pipe.hset(self.keys.pointer(tag), build_field, value)

            await run_pipeline(self.client, fill)
            return _Target(tenant, gen, build_field, True, lock)
        except BaseException:
            await lock.release()
            raise

    async def _current(self, tenant: str) -> Generation | None:
        """The tenant's current generation; refuses when tags disagree (an interrupted switch)."""
        replies = await self.index.pointer_fields([tenant])
        gens = {r[0] for r in replies}
        if len(gens) > 1:
            raise ImportRefused(
                f"tenant {tenant!r} is between two generations (an interrupted snapshot import); "
                "run a snapshot import (--replace) of its full data to repair it"
            )
        return Generation.decode(gens.pop()) if gens else None

    async def _stream(
        self,
        path: Path,
        columns: ColumnMap,
        validator: Validator,
        targets: dict[str, _Target],
        report: ImportReport,
        progress: Progress | None,
    ) -> None:
        """Read, validate and group a batch in a worker thread while Redis applies the previous one."""
        limit = await self._limit()
        items = iter(read(path, columns))
        duplicates = DuplicateFinder()

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
                if validator.in_future(row):
                    report.add_warning(_future(row, validator))
                rows.append(row)
                if len(rows) >= self.batch_rows:
                    break
            for line, earlier in duplicates.check(rows):
                report.add_warning(RowWarning(line, WarningKind.DUPLICATE, f"the same fact as line {earlier}"))
            return self._group(rows, targets, report, limit)

        upcoming = asyncio.ensure_future(asyncio.to_thread(next_batch))
        try:
            while calls := await upcoming:
                upcoming = asyncio.ensure_future(asyncio.to_thread(next_batch))
                self._check_locks()
                await self._send(calls, report)
                if progress is not None:
                    progress(report.rows)
        finally:
            if not upcoming.done():
                upcoming.cancel()
            await asyncio.gather(upcoming, return_exceptions=True)
            duplicates.close()

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

    # -- the switch ------------------------------------------------------------------------------------

    async def _switch(self, target: _Target, result: TenantResult, now: dt.datetime, source: str) -> None:
        """Point every tag at the new generation: journal first, then the tags, then the summary."""
        tenant, gen = target.tenant, target.generation
        previous = (await self.index.tenants()).get(tenant)
        info = TenantInfo(tenant, gen.number, gen.sub_bits, result.records_created, now.isoformat(), source)
        journal = Switch(info, previous.generation if previous is not None else None)
        replies = await self.index.pointer_fields([tenant])
        olds = [(tag, Generation.decode(reply[0])) for tag, reply in zip(ALL_TAGS, replies, strict=True)]
        target.switching = True
        await self.client.hset(self.keys.switches, tenant, journal.to_json())
        await self._switch_tags(tenant, gen, olds)
        await self._conclude(journal)

    async def _switch_tags(self, tenant: str, gen: Generation, tags: Sequence[tuple[str, Generation | None]]) -> None:
        """Switch the given tags (each with the generation it points to now, whose keys are dropped)."""
        value, build_field = gen.encode(), tenant + BUILD_SUFFIX
        for start in range(0, len(tags), SWITCH_TAGS_PER_PIPELINE):
            chunk = tags[start : start + SWITCH_TAGS_PER_PIPELINE]

            def fill(pipe: Pipeline, chunk: Sequence[tuple[str, Generation | None]] = chunk) -> None:
                for tag, old in chunk:
                    old_keys = self.keys.generation_keys(tag, tenant, old) if old and old != gen else []
                    SWITCH.queue(pipe, [self.keys.pointer(tag), *old_keys], [tenant, value, build_field])

            await run_pipeline(self.client, fill)

    async def _conclude(self, journal: Switch) -> None:
        """Every tag points at the new generation: the summary says so, and the journal entry goes."""
        info = journal.target
        await self.client.hset(self.keys.tenants, info.tenant, info.to_json())
        await self.client.hdel(self.keys.switches, info.tenant)

    async def _finish_interrupted_switch(self, tenant: str, replace: bool) -> str | None:
        """Finish a switch of the tenant that its import did not live to finish (called under the lock).

        Every tag that still points at the old generation holds the new one complete as its build, so the
        rest of the switch is done now. Returns what was done, for the report (None: nothing to do).
        """
        journal = (await self.index.switches()).get(tenant)
        if journal is None:
            return None
        gen = journal.generation
        replies = await self.index.pointer_fields([tenant, tenant + BUILD_SUFFIX])
        pending, broken = [], 0
        for tag, (cur, build) in zip(ALL_TAGS, replies, strict=True):
            current = Generation.decode(cur)
            if current == gen:
                continue
            pending.append((tag, current))
            if Generation.decode(build) != gen:
                broken += 1
        if broken:  # not ours to guess: only a full snapshot can make the tenant whole again
            if not replace:
                raise ImportRefused(
                    f"tenant {tenant!r} is split between two generations and generation {gen.number} is missing "
                    f"in {broken:,} hash tags, so the interrupted switch cannot be finished; run a snapshot import "
                    "(--replace) of the tenant's full data to repair it"
                )
            await self.client.hdel(self.keys.switches, tenant)
            return (
                f"tenant {tenant}: the switch to generation {gen.number} that an import left unfinished could not be "
                f"finished ({broken:,} hash tags lack it); this snapshot replaces both generations"
            )
        await self._switch_tags(tenant, gen, pending)
        await self._conclude(journal)
        return (
            f"tenant {tenant}: finished the switch to generation {gen.number} that an import left unfinished "
            f"({len(pending):,} of {TAGS:,} hash tags were still on the old generation)"
        )

    async def _finish_quietly(self, tenant: str) -> None:
        """After a failure during a switch: finish it now if Redis allows; the next import does otherwise."""
        with contextlib.suppress(Exception):
            await self._finish_interrupted_switch(tenant, replace=False)

    async def _touch_meta(self, target: _Target, result: TenantResult, now: dt.datetime, source: str) -> None:
        tenant, gen = target.tenant, target.generation
        stamp = now.isoformat()
        if not await self.index.count_records(tenant, result.records_created, gen, imported_at=stamp, source=source):
            # No summary of this generation (its first write died before writing one): start it afresh.
            info = TenantInfo(tenant, gen.number, gen.sub_bits, result.records_created, stamp, source)
            await self.client.hset(self.keys.tenants, tenant, info.to_json())

    async def _abandon(self, target: _Target) -> None:
        """Drop a snapshot that will not be switched to (strict refusal, error, interruption)."""
        try:
            await self._clean_stale_build(target.tenant)
        except Exception:  # the next import of the tenant cleans up instead
            return


def _future(row: Row, validator: Validator) -> RowWarning:
    start = row.start.isoformat()
    today = validator.today.isoformat()
    return RowWarning(
        row.line,
        WarningKind.FUTURE,
        f"start {start} is later than the import ({today}): this {row.kind.name.lower()} counts only from then",
    )


__all__ = ["ImportFileError", "ImportRefused", "ImportReport", "Loader", "TenantResult"]
