"""The consent index: look numbers up in one round trip, register objections and erasures at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gatekeeper.config import IndexSettings
from gatekeeper.contract import IndexFailure
from gatekeeper.core.model import Facts
from gatekeeper.index import codec, scripts
from gatekeeper.index.connect import connect as connect  # noqa: PLC0414 (re-exported: callers import it from here)
from gatekeeper.index.fastpath import Endpoint, FastPath
from gatekeeper.index.keys import ALL_TAGS, BUILD_SUFFIX, Generation, Keyspace, NumberKey

DEFAULT_VALUE_LIMIT = 64  # Redis' default hash-max-listpack-value
MAX_STALE_RETRIES = 3
LOCK_TTL = 15.0  # seconds a tenant's lock outlives its holder's last sign of life (an import extends it)
FIRST_WRITE_LOCK_TTL = 30.0  # seconds: creating a first generation is a few pipelined writes

Client = aioredis.Redis
Pipeline = Any  # redis.asyncio pipelines are untyped enough that Any is the honest type


class IndexUnavailable(Exception):
    """The index could not answer (Redis down, timeout, inconsistent state)."""


class StaleGeneration(IndexUnavailable):
    """A tenant's generation kept changing while a lookup or update ran (an import was switching)."""


@dataclass(frozen=True, slots=True)
class Lookup:
    key: NumberKey
    facts: Facts
    generation: int | None  # None: the tenant has no data loaded


@dataclass(frozen=True, slots=True)
class UpsertResult:
    key: NumberKey
    created: bool  # the number had no record for the tenant before
    added: int  # entries that were new
    suppressed: bool  # the number is suppressed: nothing was stored


@dataclass(frozen=True, slots=True)
class TenantInfo:
    tenant: str
    generation: int
    sub_bits: int
    records: int
    imported_at: str
    source: str

    @classmethod
    def from_json(cls, tenant: str, raw: bytes | str) -> TenantInfo:
        return cls.from_fields(tenant, json.loads(raw))

    @classmethod
    def from_fields(cls, tenant: str, data: dict[str, Any]) -> TenantInfo:
        return cls(
            tenant=tenant,
            generation=int(data["generation"]),
            sub_bits=int(data["sub_bits"]),
            records=int(data.get("records", 0)),
            imported_at=str(data.get("imported_at", "")),
            source=str(data.get("source", "")),
        )

    @property
    def current(self) -> Generation:
        return Generation(self.generation, self.sub_bits)

    def fields(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "sub_bits": self.sub_bits,
            "records": self.records,
            "imported_at": self.imported_at,
            "source": self.source,
        }

    def to_json(self) -> str:
        return json.dumps(self.fields(), sort_keys=True)


@dataclass(frozen=True, slots=True)
class Switch:
    """The journal of one tenant's generation switch (`gk:switches`): written before the first hash tag
    switches, removed once the tenant's summary names the new generation. Found while no import holds the
    tenant's lock, it marks a switch its import did not live to finish: the tenant is split, some numbers
    read from the new generation and the others from the old one, until the next import finishes it."""

    target: TenantInfo  # the tenant's summary once every tag points to the new generation
    previous: int | None  # the generation being replaced (None: the tenant's first data)

    @property
    def generation(self) -> Generation:
        return self.target.current

    @classmethod
    def from_json(cls, tenant: str, raw: bytes | str) -> Switch:
        data = json.loads(raw)
        previous = data.get("previous")
        return cls(TenantInfo.from_fields(tenant, data["target"]), None if previous is None else int(previous))

    def to_json(self) -> str:
        return json.dumps({"target": self.target.fields(), "previous": self.previous}, sort_keys=True)


class Script:
    """A Lua script called by SHA; loaded on first use and again after a Redis restart flushed it."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: Client, keys: Sequence[str], args: Sequence[bytes | str | int]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Pipeline, keys: Sequence[str], args: Sequence[bytes | str | int]) -> None:
        # As a raw command: redis-py's cluster pipeline refuses its `evalsha` method, though it routes a raw
        # EVALSHA by its keys (all of one hash tag) like any keyed command.
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


ScriptCall = tuple[Script, Sequence[str], Sequence[bytes | str | int]]  # a script, its keys, its arguments

LOOKUP = Script(scripts.LOOKUP)
MERGE = Script(scripts.MERGE)
APPEND = Script(scripts.APPEND)
SWITCH = Script(scripts.SWITCH)
ERASE = Script(scripts.ERASE)
LOOKUP_BULK = Script(scripts.LOOKUP_BULK)
COUNT = Script(scripts.COUNT)
LOCK_EXTEND = Script(scripts.LOCK_EXTEND)
LOCK_RELEASE = Script(scripts.LOCK_RELEASE)
ALL_SCRIPTS = (LOOKUP, MERGE, APPEND, SWITCH, ERASE, LOOKUP_BULK, COUNT, LOCK_EXTEND, LOCK_RELEASE)
MAX_IN_FLIGHT = 8  # lookups sent on their own before waiting ones are batched into pipelines
BULK_NUMBERS = 100  # numbers per LOOKUP_BULK call: keeps each script run well under a millisecond


async def run_pipeline(client: Client, fill: Callable[[Pipeline], None]) -> list[Any]:
    """Run a pipeline built by `fill`; once more after loading the scripts if Redis lost them."""
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        fill(pipe)
        try:
            return await pipe.execute()
        except NoScriptError:
            if attempt:
                raise
            for script in ALL_SCRIPTS:
                await client.script_load(script.source)
    raise AssertionError("unreachable")


class TenantLock:
    """The lock that keeps writers of one tenant's generations apart (imports, a first write).

    It expires `ttl` seconds after its holder last extended it, so the lock of an import that was killed is
    gone within seconds, while a live import extends it as it goes (`Loader` does, every third of the TTL).
    Only the holder (its random token) extends or releases it.
    """

    __slots__ = ("client", "key", "tenant", "token", "ttl")

    def __init__(self, client: Client, keys: Keyspace, tenant: str, ttl: float = LOCK_TTL) -> None:
        self.client = client
        self.tenant = tenant
        self.key = keys.lock(tenant)
        self.ttl = ttl
        self.token = secrets.token_hex(8)

    @property
    def _milliseconds(self) -> int:
        return max(1, round(self.ttl * 1000))

    async def acquire(self) -> bool:
        return bool(await self.client.set(self.key, self.token, nx=True, px=self._milliseconds))

    async def extend(self) -> bool:
        """Push the expiry out by a TTL; False if the lock expired meanwhile (it may have another holder)."""
        return bool(await LOCK_EXTEND(self.client, [self.key], [self.token, self._milliseconds]))

    async def release(self) -> None:
        await LOCK_RELEASE(self.client, [self.key], [self.token])

    async def holder_expires_in(self) -> float | None:
        """Seconds until the lock expires unless its holder extends it (None: nobody holds it)."""
        milliseconds = int(await self.client.pttl(self.key))
        return milliseconds / 1000 if milliseconds >= 0 else None


class ConsentIndex:
    """Reads and single writes. Bulk loading lives in `gatekeeper.index.loader`."""

    def __init__(self, client: Client, keyspace: Keyspace, fast: FastPath | None = None) -> None:
        self.client = client
        self.keys = keyspace
        self.fast = fast  # lookups over one pipelined hiredis connection (standalone Redis)
        self._generations: dict[str, Generation | None] = {}
        self._in_flight = 0
        self._waiting: list[tuple[list[str], list[bytes | str], asyncio.Future[Any]]] = []
        self._batches: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: IndexSettings) -> ConsentIndex:
        endpoint = Endpoint.from_url(settings.redis_url)
        fast = FastPath(endpoint, connect_timeout=max(settings.timeout * 20, 1.0)) if endpoint else None
        return cls(connect(settings), Keyspace(settings.prefix, settings.pepper), fast)

    async def close(self) -> None:
        if self.fast is not None:
            await self.fast.close()
        await self.client.aclose()

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def load_scripts(self) -> None:
        for script in ALL_SCRIPTS:
            await self.client.script_load(script.source)

    async def tenants(self) -> dict[str, TenantInfo]:
        raw = await self.client.hgetall(self.keys.tenants)
        return {text(k): TenantInfo.from_json(text(k), v) for k, v in raw.items()}

    async def switches(self) -> dict[str, Switch]:
        """Generation switches under way, or left unfinished by an import that died (see `Switch`)."""
        raw = await self.client.hgetall(self.keys.switches)
        return {text(k): Switch.from_json(text(k), v) for k, v in raw.items()}

    async def locked(self, tenants: Sequence[str]) -> set[str]:
        """The tenants whose lock an import (or a first write) holds now."""

        def fill(pipe: Pipeline) -> None:
            for tenant in tenants:
                pipe.exists(self.keys.lock(tenant))

        held = await run_pipeline(self.client, fill) if tenants else []
        return {tenant for tenant, exists in zip(tenants, held, strict=True) if exists}

    async def warm(self, *, scripts: bool = True) -> dict[str, TenantInfo]:
        """Load the scripts and every tenant's generation, so the first lookups need no retry.

        `scripts=False` (the service's periodic refresh): the generations only; a script that Redis lost
        (a restart, SCRIPT FLUSH) is loaded again by the call that gets NOSCRIPT.
        """
        if scripts:
            await self.load_scripts()
        tenants = await self.tenants()
        for name, info in tenants.items():
            self._generations[name] = Generation(info.generation, info.sub_bits)
        for gone in set(self._generations) - set(tenants):  # e.g. Redis came back empty
            self._generations[gone] = None
        return tenants

    def generation(self, tenant: str) -> Generation | None:
        return self._generations.get(tenant)

    # -- lookups -------------------------------------------------------------------------------------

    def _lookup_call(self, tenant: str, key: NumberKey, gen: Generation | None) -> tuple[list[str], list[bytes | str]]:
        ks, tag = self.keys, key.tag
        if gen is None:
            data = spill = ks.pointer(tag)  # never read: the script only reads data when a generation exists
        else:
            sub = key.sub(gen.sub_bits)
            data, spill = ks.data(tag, tenant, gen, sub), ks.spill(tag, tenant, gen, sub)
        keys = [ks.pointer(tag), ks.suppressions(tag), ks.objections(tag, tenant), data, spill]
        return keys, [tenant, gen.encode() if gen else b"", key.field]

    def _result(self, tenant: str, key: NumberKey, reply: list[Any]) -> Lookup | None:
        if reply[0] != 1:
            self._generations[tenant] = Generation.decode(reply[1])
            return None
        return Lookup(key, codec.facts(reply[4], reply[3], reply[2]), _generation_number(reply[1]))

    async def lookup(self, tenant: str, e164: str, *, budget: float | None = None) -> Lookup:
        """All facts for (tenant, number) plus global suppressions: one EVALSHA in the steady state.

        `budget` bounds the whole lookup (TimeoutError after it). On the fast path it is a deadline on
        the reply itself, the cheapest way to bound a wait; elsewhere an `asyncio.timeout`.
        """
        if self.fast is None and budget is not None:
            async with asyncio.timeout(budget):
                return await self._lookup(tenant, e164, None)
        return await self._lookup(tenant, e164, budget)

    async def _lookup(self, tenant: str, e164: str, budget: float | None) -> Lookup:
        key = self.keys.number_key(e164)
        deadline = None if budget is None else time.monotonic() + budget
        for _ in range(MAX_STALE_RETRIES):
            keys, args = self._lookup_call(tenant, key, self._generations.get(tenant))
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            result = self._result(tenant, key, await self._fetch(keys, args, remaining))
            if result is not None:
                return result
        raise StaleGeneration(f"the generation of tenant {tenant!r} kept changing during the lookup")

    async def _fetch(self, keys: list[str], args: list[bytes | str], within: float | None = None) -> Any:
        """One LOOKUP. Up to MAX_IN_FLIGHT go out on their own; beyond that, waiting lookups share pipelines.

        At a normal call rate every lookup is a single EVALSHA. In a burst (a dialler starting hundreds of
        calls at once) the lookups that queue up behind the ones in flight go together in one pipeline,
        instead of each waiting for a pooled connection and a round trip of its own.

        On a standalone Redis the fast path carries every lookup instead: one connection, requests written
        as they come and answered in order, which is the same sharing without redis-py's per-call work.
        `within` bounds the fast path's wait (the other paths are bounded by the caller).
        """
        if self.fast is not None:
            try:
                return await self.fast.call("EVALSHA", LOOKUP.sha, len(keys), *keys, *args, within=within)
            except NoScriptError:
                await self.client.script_load(LOOKUP.source)
                return await self.fast.call("EVALSHA", LOOKUP.sha, len(keys), *keys, *args, within=within)
        if self._in_flight < MAX_IN_FLIGHT:
            self._in_flight += 1
            try:
                return await LOOKUP(self.client, keys, args)
            finally:
                self._in_flight -= 1
                self._kick()
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((keys, args, waiter))
        return await waiter

    def _kick(self) -> None:
        if not self._waiting or self._in_flight >= MAX_IN_FLIGHT:
            return
        batch, self._waiting = self._waiting, []
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._send_batch(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _send_batch(self, batch: list[tuple[list[str], list[bytes | str], asyncio.Future[Any]]]) -> None:
        def fill(pipe: Pipeline) -> None:
            for keys, args, _ in batch:
                LOOKUP.queue(pipe, keys, args)

        try:
            replies = await run_pipeline(self.client, fill)
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else IndexUnavailable("lookup batch cancelled")
            for _, _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, _, waiter), reply in zip(batch, replies, strict=True):
                if not waiter.done():
                    waiter.set_result(reply)
        finally:
            self._in_flight -= 1
            self._kick()

    async def lookup_many(self, tenant: str, numbers: Sequence[str]) -> list[Lookup]:
        """Lookups for a list of numbers of one tenant (scrub), in as few round trips as the server allows."""
        keys = [self.keys.number_key(n) for n in numbers]
        results: list[Lookup | None] = [None] * len(keys)
        pending = list(range(len(keys)))
        bulk = not isinstance(self.client, RedisCluster)
        for _ in range(MAX_STALE_RETRIES):
            gen = self._generations.get(tenant)
            expected = gen.encode() if gen else b""

            calls: list[ScriptCall] = []
            if bulk:
                bits = gen.sub_bits if gen else 0
                for start in range(0, len(pending), BULK_NUMBERS):
                    args: list[bytes | str | int] = [self.keys.prefix, tenant, expected]
                    for i in pending[start : start + BULK_NUMBERS]:
                        key = keys[i]
                        args += [key.tag, key.sub(bits), key.field]
                    calls.append((LOOKUP_BULK, [], args))
            else:
                calls = [(LOOKUP, *self._lookup_call(tenant, keys[i], gen)) for i in pending]
            replies = await self.run_scripts(calls)
            flat = [r for chunk in replies for r in chunk] if bulk else replies
            retry = []
            for i, reply in zip(pending, flat, strict=True):
                results[i] = self._result(tenant, keys[i], reply)
                if results[i] is None:
                    retry.append(i)
            if not retry:
                return cast(list[Lookup], results)
            pending = retry
        raise StaleGeneration(f"the generation of tenant {tenant!r} kept changing during the scrub")

    async def run_scripts(
        self, calls: Sequence[tuple[Script, Sequence[str], Sequence[bytes | str | int]]]
    ) -> list[Any]:
        """Script calls in one round trip: over the pipelined hiredis connection on a standalone Redis (the
        commands packed in C), else as a redis-py pipeline (Cluster, Sentinel)."""
        if self.fast is not None:
            commands = [("EVALSHA", script.sha, len(keys), *keys, *args) for script, keys, args in calls]
            try:
                return await self.fast.call_many(commands)
            except NoScriptError:
                await self.load_scripts()
                return await self.fast.call_many(commands)

        def fill(pipe: Pipeline) -> None:
            for script, keys, args in calls:
                script.queue(pipe, keys, args)

        return await run_pipeline(self.client, fill)

    # -- single writes (write-through) ---------------------------------------------------------------

    async def upsert(self, tenant: str, e164: str, entries: Sequence[bytes]) -> UpsertResult:
        """Add facts (consents, relationships, objections as codec entries) for one number of a tenant.

        Written into the tenant's current generation and, while a snapshot import is being built, into
        that one too, so the change survives the import's switch. A tenant without data gets its first
        generation. Facts for a suppressed (erased) number are not stored.
        """
        key = self.keys.number_key(e164)
        blob = b"".join(entries)
        pointer = self.keys.pointer(key.tag)
        for _ in range(MAX_STALE_RETRIES):
            current, build = (
                Generation.decode(v) for v in await self.client.hmget(pointer, [tenant, tenant + BUILD_SUFFIX])
            )
            if current is None:
                await self.ensure_tenant(tenant)
                continue
            targets = [(tenant, current)] + ([(tenant + BUILD_SUFFIX, build)] if build is not None else [])

            def fill(pipe: Pipeline, targets: list[tuple[str, Generation]] = targets) -> None:
                for field, gen in targets:
                    sub = key.sub(gen.sub_bits)
                    keys = [
                        pointer,
                        self.keys.data(key.tag, tenant, gen, sub),
                        self.keys.spill(key.tag, tenant, gen, sub),
                        self.keys.suppressions(key.tag),
                    ]
                    MERGE.queue(pipe, keys, [field, gen.encode(), DEFAULT_VALUE_LIMIT, key.field, blob])

            try:
                replies = await run_pipeline(self.client, fill)
            except ResponseError as exc:
                if reply_code(exc) == STALE:
                    continue
                raise
            created, added, skipped = (int(x) for x in replies[0])
            if created:
                await self.count_records(tenant, created, current)
            return UpsertResult(key, created=bool(created), added=added, suppressed=bool(skipped))
        raise IndexUnavailable(f"the generation of tenant {tenant!r} kept changing during the update")

    async def ensure_tenant(self, tenant: str) -> Generation:
        """The tenant's current generation, creating an empty first one (under the import lock) if none."""
        for _ in range(100):
            existing = Generation.decode(await self.client.hget(self.keys.pointer(ALL_TAGS[0]), tenant))
            if existing is not None:
                return existing
            lock = TenantLock(self.client, self.keys, tenant, FIRST_WRITE_LOCK_TTL)
            if await lock.acquire():
                try:
                    return await self._create_first_generation(tenant)
                finally:
                    await lock.release()
            await asyncio.sleep(0.05)  # an import or another writer holds the lock: it creates the generation
        raise IndexUnavailable(f"tenant {tenant!r} is locked by an import; try again")

    async def _create_first_generation(self, tenant: str) -> Generation:
        existing = Generation.decode(await self.client.hget(self.keys.pointer(ALL_TAGS[0]), tenant))
        if existing is not None:
            return existing
        gen = Generation(int(await self.client.incr(self.keys.genseq)), 0)

        def fill(pipe: Pipeline) -> None:
            for tag in ALL_TAGS:
                pipe.hset(self.keys.pointer(tag), tenant, gen.encode())

        await run_pipeline(self.client, fill)
        info = TenantInfo(tenant, gen.number, gen.sub_bits, 0, dt.datetime.now(dt.UTC).isoformat(), "first write")
        await self.client.hset(self.keys.tenants, tenant, info.to_json())
        self._generations[tenant] = gen
        return gen

    async def count_records(
        self, tenant: str, change: int, generation: Generation, *, imported_at: str = "", source: str = ""
    ) -> bool:
        """Add `change` (may be negative) to the record count of the tenant's summary, atomically, if the
        summary still describes `generation`; an import also stamps its time and source."""
        reply = await COUNT(
            self.client,
            [self.keys.tenants],
            [tenant, change, str(generation.number), imported_at, source],
        )
        return bool(reply)

    async def object(self, tenant: str, e164: str, at: dt.datetime, reference: str = "") -> NumberKey:
        """Register an objection; it blocks the very next lookup and survives snapshot imports."""
        key = self.keys.number_key(e164)
        entry = codec.entry(codec.Kind.OBJECTION, at, None, reference)
        await APPEND(self.client, [self.keys.objections(key.tag, tenant)], [key.field, entry])
        return key

    async def suppress(self, e164: str, at: dt.datetime | dt.date, reference: str = "") -> NumberKey:
        key = self.keys.number_key(e164)
        entry = codec.entry(codec.Kind.SUPPRESSION, at, None, reference)
        await APPEND(self.client, [self.keys.suppressions(key.tag)], [key.field, entry])
        return key

    async def erase(self, e164: str, at: dt.datetime, reference: str = "erasure") -> int:
        """GDPR art. 17: drop the number's facts for every tenant and leave a global suppression.

        Returns how many hash fields were removed (records, spilled records, objections). The tenants' record
        counts drop by the records removed from their current generations. Retries when an import switched a
        generation meanwhile.
        """
        key = self.keys.number_key(e164)
        entry = codec.entry(codec.Kind.SUPPRESSION, at, None, reference)
        for _ in range(MAX_STALE_RETRIES):
            pointer = self.keys.pointer(key.tag)
            raw = await self.client.hgetall(pointer)
            current = {text(k): text(v) for k, v in raw.items()}
            fingerprint = ",".join(sorted(f"{k}={v}" for k, v in current.items()))
            targets: list[str] = []
            counted: dict[int, tuple[str, Generation]] = {}  # target index -> the current generation it holds
            tenants = {name.removesuffix(BUILD_SUFFIX) for name in current}
            tenants.update(await self._tenant_names())
            for name, value in current.items():
                gen = Generation.decode(value)
                if gen is not None:
                    tenant = name.removesuffix(BUILD_SUFFIX)
                    sub = key.sub(gen.sub_bits)
                    if name == tenant:
                        counted[len(targets)] = (tenant, gen)
                    targets += [self.keys.data(key.tag, tenant, gen, sub), self.keys.spill(key.tag, tenant, gen, sub)]
            targets += [self.keys.objections(key.tag, t) for t in sorted(tenants)]
            try:
                removed = await ERASE(
                    self.client,
                    [pointer, self.keys.suppressions(key.tag), *targets],
                    [key.field, entry, fingerprint],
                )
            except ResponseError as exc:
                if reply_code(exc) == STALE:
                    continue
                raise
            for position, (tenant, gen) in counted.items():
                if int(removed[position]):  # the data hash holds every record (a spilled one as a marker)
                    await self.count_records(tenant, -1, gen)
            return sum(int(n) for n in removed)
        raise IndexUnavailable("generations kept changing during the erasure; try again")

    async def _tenant_names(self) -> set[str]:
        return {text(k) for k in await self.client.hkeys(self.keys.tenants)}

    async def pointer_fields(self, fields: list[str]) -> list[list[Any]]:
        """The given fields of every tag's generation pointer, in ALL_TAGS order (one pipeline)."""

        def fill(pipe: Pipeline) -> None:
            for tag in ALL_TAGS:
                pipe.hmget(self.keys.pointer(tag), fields)

        return await run_pipeline(self.client, fill)

    async def pointer_hashes(self) -> list[dict[str, Generation | None]]:
        """Every tag's generation pointer hash (field -> generation), in ALL_TAGS order (one pipeline)."""

        def fill(pipe: Pipeline) -> None:
            for tag in ALL_TAGS:
                pipe.hgetall(self.keys.pointer(tag))

        replies = await run_pipeline(self.client, fill)
        return [{text(k): Generation.decode(v) for k, v in reply.items()} for reply in replies]

    async def pointer_state(self, tenant: str) -> dict[str, tuple[Generation | None, Generation | None]]:
        """Per tag: (current, being built) generation of a tenant; for operators and tests."""
        replies = await self.pointer_fields([tenant, tenant + BUILD_SUFFIX])
        return {
            tag: (Generation.decode(cur), Generation.decode(build))
            for tag, (cur, build) in zip(ALL_TAGS, replies, strict=True)
        }


@functools.lru_cache(maxsize=1024)
def _generation_number(value: bytes | None) -> int | None:
    gen = Generation.decode(value)
    return gen.number if gen else None


def text(value: bytes | str) -> str:
    """A Redis reply value as text."""
    return value.decode() if isinstance(value, bytes) else value


STALE = "STALE"  # the code of the Lua scripts' error reply when a tenant's generation changed under them


def reply_code(exc: ResponseError) -> str:
    """The code of a Redis error reply: its first word (`STALE`, `BUSYGROUP`, `NOGROUP`, `WRONGTYPE`, …).

    Redis (and the Lua scripts, with `redis.error_reply`) put the kind of an error there; callers compare
    the code, never search the message.
    """
    return str(exc).partition(" ")[0]


def is_unavailable(exc: BaseException) -> bool:
    """Errors that mean "the index cannot answer" (and so: fail closed)."""
    return isinstance(exc, RedisError | OSError | IndexUnavailable | TimeoutError)


def failure_of(exc: BaseException) -> IndexFailure:
    """Classify why the index did not answer, once, where the exception is caught (metrics and records
    use the class, never the exception's text). `OTHER` means a bug rather than an unavailable index."""
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        return IndexFailure.TIMEOUT
    if isinstance(exc, StaleGeneration):
        return IndexFailure.STALE
    if isinstance(exc, RedisConnectionError | OSError):
        return IndexFailure.CONNECTION
    if isinstance(exc, RedisError | IndexUnavailable):
        return IndexFailure.RESPONSE
    return IndexFailure.OTHER
