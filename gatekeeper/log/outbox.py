"""The outbox: the gate's recorder. One XADD per decision; a local spool file when Redis cannot take it.

Redis keys (same prefix as the consent index, `gk` by default; I = instance):

    gk:outbox:I        stream  one entry per decision: {"r": <record JSON>}; read by the shipper's group
                       `shipper`, deleted once its record is committed to SQL

`keep` returns once the record is durably accepted: Redis acknowledged the XADD, or the record is in the
spool, a JSON-lines file written and fsynced before `keep` returns. The gate answers the PBX only after
that (evidence before action). Concurrent spool writes share one write and one fsync (group commit), so a
Redis outage does not serialise the calls behind one fsync each. After a failed XADD the outbox stays in
spool mode (no more XADD attempts, so an unreachable Redis costs no time per decision) until its
background task gets an answer from Redis again; that task then replays the spool (across an outage the
stream is not in decision order: the log sorts by decision time, the chain follows shipping order). When
neither Redis nor the spool takes a record, `keep` raises `EvidenceError`: the call gets no verdict.

Spooled records keep their decision id; replaying one twice (a crash mid-replay, or an XADD that timed out
but did land) yields two stream entries of one decision, which the shipper stores once. Several processes
of one instance (the service, `gatekeeper-agi`, `gatekeeper check --record`) may share a spool: appends and
the replay's hand-over are serialised with `flock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper.config import Settings, sqlite_path
from gatekeeper.index.fastpath import FastPath, pack_head, with_last
from gatekeeper.index.store import Client
from gatekeeper.record import DecisionRecord, EvidenceError, RecordError

if TYPE_CHECKING:
    from gatekeeper.service import Check

log = logging.getLogger(__name__)

GROUP = "shipper"
RECORD_FIELD = b"r"
APPEND_TIMEOUT = 0.5  # seconds for one XADD before the record goes to the spool
REPLAY_CHUNK = 500  # records per pipelined replay round trip
RETRY_INITIAL = 0.2  # seconds before the first replay attempt after a failure; doubles up to RETRY_MAX
RETRY_MAX = 5.0
RESCAN_INTERVAL = 30.0  # seconds between looks for spool files left by other processes
STOP_RECHECK = 0.5  # seconds between cancellations of a background task that is being stopped


@dataclass(frozen=True, slots=True)
class OutboxKeys:
    """The outbox's Redis key names (one stream per gatekeeper instance)."""

    prefix: str
    instance: str
    group: str = GROUP

    @property
    def stream(self) -> str:
        return f"{self.prefix}:outbox:{self.instance}"


def default_spool_dir(settings: Settings) -> Path:
    """`[log] spool_dir`; else next to the SQLite file, or the working directory when the log is in PostgreSQL."""
    if settings.log.spool_dir is not None:
        return settings.log.spool_dir
    if settings.log.dsn.startswith("sqlite:"):
        return sqlite_path(settings.log.dsn).parent.absolute()
    return Path.cwd()


class Spool:
    """Records that could not reach Redis, one JSON line each, durable once `append` returns.

    `take` hands the current file over for replay by renaming it; an appender that opened the file
    before the rename notices (its inode is no longer the path's) and opens the new one.
    """

    def __init__(self, directory: Path, instance: str) -> None:
        self.directory = directory
        self.instance = instance
        self.path = directory / f"gatekeeper-outbox-{instance}.jsonl"
        self._replay_glob = f"gatekeeper-outbox-{instance}.replay-*.jsonl"

    def append(self, payloads: Sequence[bytes]) -> None:
        """Blocking: write records (one JSON line each) in one write and fsync them (call it in a thread)."""
        data = b"".join(p + b"\n" for p in payloads)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not _is_current(fd, self.path):
                    continue  # handed over for replay while we waited for the lock
                created = os.fstat(fd).st_size == 0
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
                if created:
                    _fsync_dir(self.directory)
                return
            finally:
                os.close(fd)  # releases the lock

    def take(self) -> Path | None:
        """Blocking: rename the current spool file to a replay file (None when there is nothing)."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not _is_current(fd, self.path):
                    continue
                if os.fstat(fd).st_size == 0:
                    os.unlink(self.path)
                    return None
                target = self.directory / f"gatekeeper-outbox-{self.instance}.replay-{time.time_ns()}.jsonl"
                os.rename(self.path, target)
                _fsync_dir(self.directory)
                return target
            finally:
                os.close(fd)

    def replay_files(self) -> list[Path]:
        return sorted(self.directory.glob(self._replay_glob))

    def has_records(self) -> bool:
        return bool(self.replay_files()) or (self.path.exists() and self.path.stat().st_size > 0)

    def count(self) -> int:
        """Records waiting (lines in the spool and the replay files)."""
        total = 0
        for path in [*self.replay_files(), self.path]:
            with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
                total += sum(1 for line in f if line.strip())
        return total

    @staticmethod
    def read(path: Path) -> tuple[list[DecisionRecord], int]:
        """The records of a replay file and how many lines could not be read (a torn last line)."""
        records, bad = [], 0
        with path.open("rb") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    records.append(DecisionRecord.loads(line))
                except RecordError:
                    bad += 1
        return records, bad

    def done(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        _fsync_dir(self.directory)


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait until it has ended.

    Cancels again until the task is done, and the tasks' loops also check a stop flag: a cancellation
    that arrives as a blocking redis-py read completes can be lost (redis-py issue 2028; seen here with
    XREADGROUP BLOCK on Python 3.11), which would leave `stop` waiting forever.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=STOP_RECHECK)
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())


def _is_current(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Outbox:
    """`gate.Recorder`: append each decision to the instance's stream, or to the spool; replay the spool.

    Also a service component (`outbox`): `start` runs the replay task, `stop` ends it (records still
    spooled stay on disk and are replayed on the next start, by this or any process of the instance).
    """

    name = "outbox"

    def __init__(
        self,
        client: Client,
        keys: OutboxKeys,
        spool: Spool,
        *,
        timeout: float = APPEND_TIMEOUT,
        retry_initial: float = RETRY_INITIAL,
        retry_max: float = RETRY_MAX,
        rescan: float = RESCAN_INTERVAL,
        fast: FastPath | None = None,
    ) -> None:
        self.client = client
        self.fast = fast  # the index's pipelined hiredis connection (standalone Redis): a cheaper XADD
        self.keys = keys
        self.spool = spool
        self.timeout = timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.rescan = rescan
        self.spooling = False  # True from a failed XADD until Redis answers the replay task again
        self.appended = 0
        self.spooled = 0
        self.replayed = 0
        self._xadd_head = pack_head("XADD", keys.stream, "*", RECORD_FIELD)
        self._spool_queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._spool_writer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._replay_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @classmethod
    def from_settings(
        cls, settings: Settings, client: Client, *, spool_dir: Path | None = None, fast: FastPath | None = None
    ) -> Outbox:
        """The outbox of this instance on the index's Redis client (`ConsentIndex.client` and `.fast`)."""
        instance = settings.log.instance_name
        directory = spool_dir if spool_dir is not None else default_spool_dir(settings)
        return cls(client, OutboxKeys(settings.index.prefix, instance), Spool(directory, instance), fast=fast)

    # -- the recorder --------------------------------------------------------------------------------

    async def keep(self, record: DecisionRecord, /) -> None:
        """Return once the record is in the stream or fsynced in the spool; `EvidenceError` if in neither."""
        payload = record.payload()
        if not self.spooling:
            try:
                await self._xadd(payload)
            except Exception as exc:
                if not self.spooling:
                    log.warning(
                        "decision log outbox %s unavailable (%s); spooling to %s",
                        self.keys.stream,
                        type(exc).__name__,
                        self.spool.path,
                    )
                self.spooling = True
            else:
                self.appended += 1
                return
        await self._spool(payload, record.decision_id)

    async def _xadd(self, payload: bytes) -> None:
        """One XADD, bounded by `timeout` (after it the record goes to the spool)."""
        if self.fast is not None:
            await self.fast.call_packed(with_last(self._xadd_head, payload), within=self.timeout)
        else:
            async with asyncio.timeout(self.timeout):
                await self.client.xadd(self.keys.stream, {RECORD_FIELD: payload})

    async def _spool(self, payload: bytes, decision_id: str) -> None:
        """Append to the spool with whatever else is waiting: one write and one fsync for all of them."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._spool_queue.append((payload, waiter))
        if self._spool_writer is None or self._spool_writer.done():
            self._spool_writer = asyncio.get_running_loop().create_task(self._write_spool(), name="outbox-spool")
        try:
            await asyncio.shield(waiter)  # a call given up on is still written: its decision was made
        except EvidenceError:
            log.error("decision %s not kept: neither Redis nor the spool %s took it", decision_id, self.spool.path)
            raise

    async def _write_spool(self) -> None:
        while self._spool_queue:
            batch, self._spool_queue = self._spool_queue, []
            try:
                await asyncio.to_thread(self.spool.append, [payload for payload, _ in batch])
            except Exception as exc:
                log.error("the spool %s cannot be written: %s: %s", self.spool.path, type(exc).__name__, exc)
                failure = EvidenceError(f"the spool {self.spool.path} cannot be written: {type(exc).__name__}")
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(failure)
                continue
            self.spooled += len(batch)
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_result(None)
            self._wake.set()

    # -- replay --------------------------------------------------------------------------------------

    async def replay(self) -> int:
        """Move every spooled record into the stream; returns how many. Raises if Redis fails meanwhile."""
        async with self._replay_lock:
            total = 0
            while True:
                await asyncio.to_thread(self.spool.take)
                files = await asyncio.to_thread(self.spool.replay_files)
                if not files:
                    break
                for path in files:
                    records, bad = await asyncio.to_thread(Spool.read, path)
                    if bad:
                        log.error("%s: %d unreadable line(s) skipped (torn by a crash while spooling)", path, bad)
                    for start in range(0, len(records), REPLAY_CHUNK):
                        await self._xadd_many(records[start : start + REPLAY_CHUNK])
                    await asyncio.to_thread(self.spool.done, path)
                    total += len(records)
            self.replayed += total
            return total

    async def _xadd_many(self, records: Sequence[DecisionRecord]) -> None:
        pipe: Any = self.client.pipeline(transaction=False)
        for record in records:
            pipe.xadd(self.keys.stream, {RECORD_FIELD: record.payload()})
        async with asyncio.timeout(max(self.timeout, 5.0)):
            await pipe.execute()

    async def _replay_loop(self) -> None:
        delay = self.retry_initial
        while not self._stopping:
            if not self.spooling and not await asyncio.to_thread(self.spool.has_records):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.rescan):
                        await self._wake.wait()
                self._wake.clear()
                continue
            try:
                await self.client.ping()
                if self.spooling:
                    # Redis answers again: new records go to the stream while the spool drains.
                    self.spooling = False
                    log.warning("decision log outbox %s reachable again; replaying the spool", self.keys.stream)
                replayed = await self.replay()
            except Exception as exc:
                log.debug("spool replay postponed %.1f s: %s", delay, type(exc).__name__)
                await asyncio.sleep(delay)  # back off while Redis is away
                delay = min(delay * 2, self.retry_max)
                continue
            delay = self.retry_initial
            if replayed:
                log.info("replayed %d spooled decision record(s) into %s", replayed, self.keys.stream)

    # -- component -----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._replay_loop(), name="outbox-replay")

    async def stop(self) -> None:
        self._stopping = True
        if self._spool_writer is not None:
            await asyncio.wait({self._spool_writer})  # the records being spooled are written first
        if self._task is not None:
            await stop_task(self._task)
            self._task = None

    async def readiness(self) -> Check:
        from gatekeeper.service import Check  # noqa: PLC0415 (gatekeeper.service imports this package)

        waiting = await asyncio.to_thread(self.spool.count)
        if self.spooling:
            return Check(True, f"Redis unreachable: {waiting} decision record(s) spooled to {self.spool.path}")
        return Check(True, f"appending to {self.keys.stream}" + (f"; {waiting} spooled" if waiting else ""))
