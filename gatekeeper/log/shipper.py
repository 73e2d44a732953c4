"""The shipper: moves decision records from the Redis outbox into SQL, losing and duplicating nothing.

One cycle: read a batch through the consumer group (first this consumer's own pending entries, the ones a
crash left read but unacknowledged; then new ones), insert it into SQL in one transaction (records whose
decision id is stored already are skipped), commit, and only then XACK + XDEL the entries (one MULTI).
A crash before the commit leaves the entries pending: they are read again. A crash after the commit and
before the acknowledgement leaves them pending too: they are read again and skipped as stored. When SQL
or Redis fails, the shipper backs off (doubling up to `retry_max`) and starts the next cycle from its
pending entries again; records wait in the stream meanwhile (`gatekeeper_outbox_backlog`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gatekeeper.config import Settings
from gatekeeper.index.connect import connect
from gatekeeper.index.store import Client, reply_code
from gatekeeper.log.outbox import RECORD_FIELD, OutboxKeys, stop_task
from gatekeeper.log.record import DecisionRecord, RecordError
from gatekeeper.log.sql import DATABASE_ERRORS, SchemaError
from gatekeeper.log.store import ChainConflict, DeadLetter, LogStore
from gatekeeper.metrics import Metrics

if TYPE_CHECKING:
    from gatekeeper.service import Check

log = logging.getLogger(__name__)

BATCH = 500  # entries per SQL transaction
SERVE_BATCH = 100  # inside `gatekeeper serve`: smaller reads, so no step of shipping holds the calls up long
YIELD_EVERY = 16  # records handled before the shipper lets the event loop run other work
BLOCK = 1.0  # seconds a read waits for new entries
RETRY_INITIAL = 0.5  # seconds after the first failure; doubles up to RETRY_MAX
RETRY_MAX = 30.0
CLAIM_IDLE = 60.0  # seconds after which another consumer's unacknowledged entries are taken over
UNREADY_AFTER = 60.0  # seconds of failing before readiness reports the shipper as not ready

Entry = tuple[str, dict[bytes, bytes] | None]  # (stream id, fields); fields None: deleted while pending


class Stage(StrEnum):
    """Points in a cycle where a crash is survivable (the fault-injection seam names them)."""

    READ = "read"  # entries read from the stream, nothing in SQL yet
    COMMITTED = "committed"  # committed to SQL, not yet acknowledged in the stream


Fault = Callable[[Stage], Awaitable[None]]


class Side(StrEnum):
    """Which end of the shipping failed: the Redis outbox it reads, or the SQL database it writes."""

    REDIS = "redis"
    DATABASE = "database"
    UNKNOWN = "unknown"  # neither a Redis nor a database error: a bug, logged with its traceback


def failed_side(exc: BaseException) -> Side:
    """The side an exception of a shipping cycle comes from (redis-py wraps every socket error in RedisError)."""
    if isinstance(exc, RedisError):
        return Side.REDIS
    if isinstance(exc, (*DATABASE_ERRORS, SchemaError, ChainConflict)):
        return Side.DATABASE
    return Side.UNKNOWN


def redis_description(settings: Settings) -> str:
    """How messages name the Redis of the outbox (without its password)."""
    return f"Redis at {settings.index.redacted_url}"


def shipper_client(settings: Settings, block: float = BLOCK) -> Client:
    """A Redis client for blocking stream reads; no automatic retries (a failed read re-reads the pending).

    Built like the index's client, so Sentinel and Cluster URLs work here too.
    """
    return connect(settings.index, socket_timeout=block + 5.0, client_name="gatekeeper-shipper")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(reply: Any) -> list[Entry]:
    """Stream entries from an XREADGROUP reply (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else [item[1] for item in reply]
    out: list[Entry] = []
    for entries in streams:
        for entry in entries:
            stream_id, fields = entry[0], entry[1]
            out.append((_text(stream_id), dict(fields) if fields is not None else None))
    return out


LINGER = 0.2  # seconds the shipper waits after a small batch, so that busy periods ship in large ones
FINAL_SHIP_SECONDS = 5.0  # a graceful stop ships what is waiting for at most this long


class Shipper:
    """Service component `log`: ships this instance's outbox stream into the SQL log."""

    name = "log"

    def __init__(
        self,
        client: Client,
        store: LogStore,
        keys: OutboxKeys,
        *,
        metrics: Metrics | None = None,
        consumer: str | None = None,
        batch: int = BATCH,
        block: float = BLOCK,
        retry_initial: float = RETRY_INITIAL,
        retry_max: float = RETRY_MAX,
        claim_idle: float = CLAIM_IDLE,
        unready_after: float = UNREADY_AFTER,
        owns: bool = False,
        redis_name: str = "Redis",
    ) -> None:
        self.client = client
        self.redis_name = redis_name  # e.g. "Redis at redis://10.0.0.5:6379/0", for messages
        self.store = store
        self.keys = keys
        self.metrics = metrics
        self.consumer = consumer or keys.instance  # stable: a restart finds its own pending entries
        self.batch = batch
        self.block = block
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.claim_idle = claim_idle
        self.unready_after = unready_after
        self.fault: Fault | None = None  # tests: raise here to simulate a crash at a stage
        self.shipped = 0
        self.duplicates = 0
        self.backlog = 0
        self.lag = 0.0
        self.last_error: str | None = None
        self._owns = owns
        self._prepared = False
        self._pending_done = False
        self._failing_since: float | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @classmethod
    def from_settings(cls, settings: Settings, *, metrics: Metrics | None = None, batch: int = BATCH) -> Shipper:
        """A shipper with its own Redis client and SQL connection (closed by `stop`)."""
        keys = OutboxKeys(settings.index.prefix, settings.log.instance_name)
        return cls(
            shipper_client(settings),
            LogStore.from_dsn(settings.log.dsn),
            keys,
            metrics=metrics,
            batch=batch,
            owns=True,
            redis_name=redis_description(settings),
        )

    # -- one cycle -----------------------------------------------------------------------------------

    async def _prepare(self) -> None:
        if self._prepared:
            return
        await self.store.open()
        try:
            # From id 0: entries appended before the group existed (e.g. after a Redis restart) are shipped.
            await self.client.xgroup_create(self.keys.stream, self.keys.group, id="0", mkstream=True)
        except ResponseError as exc:
            if reply_code(exc) != "BUSYGROUP":
                raise
        self._prepared = True
        self._pending_done = False

    async def _read(self, block: float | None) -> list[Entry]:
        if not self._pending_done:
            mine = await self._xreadgroup("0", None)
            if mine:
                return mine
            self._pending_done = True
            claimed: Any = await self.client.xautoclaim(
                self.keys.stream,
                self.keys.group,
                self.consumer,
                min_idle_time=int(self.claim_idle * 1000),
                start_id="0-0",
                count=self.batch,
            )
            taken = [(_text(i), dict(f) if f is not None else None) for i, f in claimed[1]]
            if taken:
                log.info("took over %d unacknowledged outbox entries from another consumer", len(taken))
                return taken
        return await self._xreadgroup(">", None if block is None else max(1, int(block * 1000)))

    async def _xreadgroup(self, start: str, block_ms: int | None) -> list[Entry]:
        for attempt in range(2):
            try:
                reply = await self.client.xreadgroup(
                    self.keys.group, self.consumer, {self.keys.stream: start}, count=self.batch, block=block_ms
                )
            except ResponseError as exc:
                if reply_code(exc) != "NOGROUP" or attempt:
                    raise
                # Redis lost the stream and its group (restart without persistence): create them again.
                log.warning("outbox group %s missing on %s; creating it", self.keys.group, self.keys.stream)
                self._prepared = False
                await self._prepare()
                continue
            return _entries(reply)
        raise AssertionError("unreachable")

    async def _ship(self, entries: list[Entry]) -> int:
        records: list[tuple[str, DecisionRecord]] = []
        dead: list[DeadLetter] = []
        for i, (stream_id, fields) in enumerate(entries):
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # inside `gatekeeper serve`: let the calls through between records
            if fields is None:
                continue  # deleted while pending: it was shipped; only the acknowledgement is missing
            try:
                records.append((stream_id, DecisionRecord.loads(fields.get(RECORD_FIELD, b""))))
            except RecordError as exc:
                payload = json.dumps({_text(k): v.decode(errors="replace") for k, v in fields.items()})
                dead.append(DeadLetter(self.keys.instance, stream_id, payload, str(exc)))
                log.error("outbox entry %s is not a readable record (%s); kept in dead_letters", stream_id, exc)
        if self.fault is not None:
            await self.fault(Stage.READ)
        report = await self.store.insert_batch(records, dead)
        if self.fault is not None:
            await self.fault(Stage.COMMITTED)
        ids = [stream_id for stream_id, _ in entries]
        pipe: Any = self.client.pipeline(transaction=True)
        pipe.xack(self.keys.stream, self.keys.group, *ids)
        pipe.xdel(self.keys.stream, *ids)
        await pipe.execute()
        self.shipped += report.inserted
        self.duplicates += report.duplicates
        if report.duplicates:
            log.info("%d outbox entries were stored already (re-shipped or replayed twice)", report.duplicates)
        return report.inserted

    async def update_metrics(self) -> None:
        """Set `gatekeeper_outbox_backlog` and `gatekeeper_shipper_lag_seconds` from the stream."""
        pipe: Any = self.client.pipeline(transaction=False)
        pipe.xlen(self.keys.stream)
        pipe.xrange(self.keys.stream, "-", "+", count=1)
        length, first = await pipe.execute()
        self.backlog = int(length)
        if first:
            oldest_ms = int(_text(first[0][0]).partition("-")[0])
            self.lag = max(0.0, time.time() - oldest_ms / 1000)
        else:
            self.lag = 0.0
        if self.metrics is not None:
            self.metrics.outbox_backlog.set(self.backlog)
            self.metrics.shipper_lag.set(self.lag)

    async def ship_once(self) -> int:
        """Ship everything in the stream now (pending entries first); returns the records stored."""
        async with self._lock:
            await self._prepare()
            self._pending_done = False
            total = 0
            while entries := await self._read(None):
                total += await self._ship(entries)
            await self.update_metrics()
            return total

    async def _cycle(self) -> int:
        async with self._lock:
            await self._prepare()
            entries = await self._read(self.block)
            if entries:
                await self._ship(entries)
            await self.update_metrics()
            return len(entries)

    # -- the background task -------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.retry_initial
        while not self._stopping:
            try:
                shipped = await self._cycle()
            except Exception as exc:
                self._failed(exc, delay)
                await asyncio.sleep(delay)  # back off; the records wait in the stream
                delay = min(delay * 2, self.retry_max)
                continue
            if self._failing_since is not None:
                log.warning("decision log shipping resumed after %.0f s", time.monotonic() - self._failing_since)
                self._failing_since = None
                self.last_error = None
            delay = self.retry_initial
            if 0 < shipped < self.batch:
                # Let records gather: one transaction per ~LINGER of calls instead of one per call.
                await asyncio.sleep(LINGER)  # stop() cancels the task, also here

    def _failed(self, exc: Exception, delay: float) -> None:
        self._prepared = False  # re-check the group and start again from the pending entries
        side = failed_side(exc)
        error = f"{type(exc).__name__}: {exc}".strip()
        where = {Side.REDIS: self.redis_name, Side.DATABASE: self.store.db.description}.get(side)
        self.last_error = f"{where}: {error}"[:300] if where else error[:300]
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            if side is Side.REDIS:
                trouble = "is unreachable" if isinstance(exc, RedisConnectionError | RedisTimeoutError) else "failed"
                log.warning(
                    "cannot ship the decision log: %s %s (%s); retrying, the records wait in the outbox stream %s "
                    "(new ones in the local spool while Redis is away)",
                    self.redis_name,
                    trouble,
                    error[:300],
                    self.keys.stream,
                )
            else:
                log.warning(
                    "cannot ship the decision log%s (%s); retrying, the records wait in Redis (%s)",
                    f" to {where}" if where else "",
                    error[:300],
                    self.keys.stream,
                    exc_info=side is Side.UNKNOWN,
                )
        else:
            log.debug("decision log shipping still failing (%s); next try in %.1f s", self.last_error, delay)

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="log-shipper")

    async def stop(self) -> None:
        """Stop the loop, then ship what is waiting (bounded); what is left is shipped by the next start."""
        self._stopping = True
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        try:
            async with asyncio.timeout(FINAL_SHIP_SECONDS):
                await self.ship_once()
        except Exception as exc:  # the records stay in the stream (or spool) for the next start
            log.warning("could not ship the last decision records before stopping: %s: %s", type(exc).__name__, exc)
        if self._owns:
            await self.client.aclose()
            await self.store.close()

    async def readiness(self) -> Check:
        from gatekeeper.service import Check  # noqa: PLC0415 (gatekeeper.service imports this package)

        waiting = f"{self.backlog} record(s) waiting in the outbox, oldest {self.lag:.1f} s"
        if self._failing_since is not None and time.monotonic() - self._failing_since >= self.unready_after:
            failing = time.monotonic() - self._failing_since
            return Check(False, f"not shipping for {failing:.0f} s ({self.last_error}); {waiting}")
        if self._failing_since is not None:
            return Check(True, f"retrying ({self.last_error}); {waiting}")
        return Check(True, waiting)
