"""Writing the decision log: chained inserts, the audit trail, chain verification and the retention purge.

Each instance has a chain: its records carry `seq` 1, 2, 3 … in shipping order, the hash of the record
before (`prev_hash`) and their own hash over all their fields (`record.chain_hash`). The `chains` table
holds, per instance, the head (last seq and hash) and the base (the last purged seq and hash; 0 and
`GENESIS` before any purge). Inserting takes the instance's chain row as a lock, so two shippers of one
instance can never fork a chain, and skips records whose decision id is already stored, so shipping the
same outbox entry twice stores it once.

`verify_chain` walks each chain from its base to its head and names every record that was edited, is
missing, was inserted, or no longer links to the one before. `purge` deletes the oldest records (a
contiguous prefix of each chain, checked as it goes) and moves the base forward, so what remains still
verifies.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gatekeeper.log.query import SELECT_DECISIONS, LogReader, row_from_stored, stored_from_row
from gatekeeper.log.record import GENESIS, DecisionRecord, StoredRecord, chain_hash, format_time
from gatekeeper.log.sql import Database, Dialect, Tx, migrate, open_database

EXISTING_CHUNK = 500  # decision ids per "already stored?" query
VERIFY_PAGE = 2000
PURGE_BATCH = 1000
MAX_PROBLEMS = 100  # per instance; a wrecked chain need not be listed record by record

YIELD_EVERY = 16  # records hashed before the event loop gets a turn
_INSERT = (
    "INSERT INTO decisions (decision_id, at, instance, campaign, tenant, number_masked, number_hash, verdict, "
    "reason, would_block, regime, explanation, basis_reference, rule, generation, uniqueid, linkedid, source, "
    "latency_us, index_error, seq, stream_id, shipped_at, prev_hash, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (decision_id) DO NOTHING"
)


class ChainConflict(Exception):
    """A record of the batch was stored by someone else meanwhile; the batch was rolled back (retry it)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An outbox entry that is not a readable record: kept verbatim in SQL instead of being dropped."""

    instance: str
    stream_id: str
    payload: str
    error: str


@dataclass(frozen=True, slots=True)
class InsertReport:
    inserted: int
    duplicates: int  # already stored (a re-shipped entry or a replayed spool line)
    dead_letters: int = 0


class ProblemKind(StrEnum):
    EDITED = "edited"  # the record's content no longer matches its hash
    DELETED = "deleted"  # records missing from the chain
    INSERTED = "inserted"  # a record the chain never had (beyond the head, below the base, no chain)
    BROKEN_LINK = "broken-link"  # the record does not point at the one before it (that one was replaced)


@dataclass(frozen=True, slots=True)
class ChainProblem:
    instance: str
    kind: ProblemKind
    seq: int | None
    decision_id: str | None
    detail: str

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "chain"
        who = f" (decision {self.decision_id})" if self.decision_id else ""
        return f"instance {self.instance}, {where}{who}: {self.kind.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class ChainState:
    instance: str
    head_seq: int
    head_hash: str
    base_seq: int
    base_hash: str
    purged: int


@dataclass(slots=True)
class ChainReport:
    checked: dict[str, int] = field(default_factory=dict)  # instance -> records verified
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(slots=True)
class PurgeReport:
    cutoff: dt.datetime
    deleted: dict[str, int] = field(default_factory=dict)  # instance -> records deleted
    stopped: list[ChainProblem] = field(default_factory=list)  # chains the purge refused to cut through

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


class LogStore(LogReader):
    """The decision log in SQL: `open` applies the migrations; reads come from `LogReader`."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.schema_version = 0

    @classmethod
    def from_dsn(cls, dsn: str) -> LogStore:
        return cls(open_database(dsn))

    async def open(self) -> LogStore:
        self.schema_version = await migrate(self.db)
        return self

    # -- shipping ------------------------------------------------------------------------------------

    async def insert_batch(
        self,
        entries: Sequence[tuple[str, DecisionRecord]],
        dead_letters: Sequence[DeadLetter] = (),
        *,
        shipped_at: dt.datetime | None = None,
    ) -> InsertReport:
        """Store outbox entries (stream id, record) in one transaction, chained in the order given."""
        shipped_at = shipped_at or dt.datetime.now(dt.UTC)
        by_instance: dict[str, list[tuple[str, DecisionRecord]]] = {}
        seen: set[str] = set()
        for stream_id, record in entries:
            if record.decision_id not in seen:
                seen.add(record.decision_id)
                by_instance.setdefault(record.instance, []).append((stream_id, record))
        inserted = 0
        async with self.db.transaction(write=True) as tx:
            for instance in sorted(by_instance):  # one lock order for every shipper
                await self._lock_chain(tx, instance)
            existing = await _existing(tx, sorted(seen))
            for instance in sorted(by_instance):
                fresh = [(s, r) for s, r in by_instance[instance] if r.decision_id not in existing]
                inserted += await self._append(tx, instance, fresh, shipped_at)
            if dead_letters:
                await tx.executemany(
                    "INSERT INTO dead_letters (instance, stream_id, payload, error, at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (instance, stream_id) DO NOTHING",
                    [(d.instance, d.stream_id, d.payload, d.error, format_time(shipped_at)) for d in dead_letters],
                )
        return InsertReport(inserted, len(entries) - inserted, len(dead_letters))

    async def _lock_chain(self, tx: Tx, instance: str) -> ChainState:
        await tx.execute(
            "INSERT INTO chains (instance, head_seq, head_hash, base_seq, base_hash, purged) "
            "VALUES (?, 0, ?, 0, ?, 0) ON CONFLICT (instance) DO NOTHING",
            (instance, GENESIS, GENESIS),
        )
        lock = " FOR UPDATE" if self.db.dialect is Dialect.POSTGRES else ""  # SQLite: BEGIN IMMEDIATE locked
        row = await tx.fetchone(
            "SELECT instance, head_seq, head_hash, base_seq, base_hash, purged FROM chains WHERE instance = ?" + lock,  # noqa: S608
            (instance,),
        )
        assert row is not None
        return _chain(row)

    async def _append(
        self, tx: Tx, instance: str, entries: Sequence[tuple[str, DecisionRecord]], shipped_at: dt.datetime
    ) -> int:
        if not entries:
            return 0
        state = await _chain_state(tx, instance)
        seq, prev = state.head_seq, state.head_hash
        rows = []
        for i, (stream_id, record) in enumerate(entries):
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # hashing a batch is CPU work: let a service's calls through meanwhile
            seq += 1
            digest = chain_hash(record, seq, stream_id, shipped_at, prev)
            rows.append(row_from_stored(StoredRecord(record, seq, stream_id, shipped_at, prev, digest)))
            prev = digest
        written = await tx.executemany(_INSERT, rows)
        if written != len(rows):
            raise ChainConflict(f"{len(rows) - written} record(s) of instance {instance} were stored meanwhile")
        await tx.execute("UPDATE chains SET head_seq = ?, head_hash = ? WHERE instance = ?", (seq, prev, instance))
        return len(rows)

    # -- audit ---------------------------------------------------------------------------------------

    async def add_audit(
        self,
        actor: str,
        role: str,
        action: str,
        *,
        number_hash: str | None = None,
        details: Mapping[str, Any] | None = None,
        at: dt.datetime | None = None,
    ) -> int:
        """Record a change made through the API, UI or CLI; returns the entry's id.

        `details` is JSON (never put a telephone number in it: use `number_hash`).
        """
        text = json.dumps(dict(details or {}), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        async with self.db.transaction(write=True) as tx:
            row = await tx.fetchone(
                "INSERT INTO audit (at, actor, role, action, number_hash, details) VALUES (?, ?, ?, ?, ?, ?) "
                "RETURNING id",
                (format_time(at or dt.datetime.now(dt.UTC)), actor, role, action, number_hash, text),
            )
        assert row is not None
        return int(row[0])

    # -- chains --------------------------------------------------------------------------------------

    async def chains(self) -> dict[str, ChainState]:
        async with self.db.transaction(write=False) as tx:
            rows = await tx.fetchall(
                "SELECT instance, head_seq, head_hash, base_seq, base_hash, purged FROM chains ORDER BY instance"
            )
        return {r[0]: _chain(r) for r in rows}

    async def verify_chain(self, instance: str | None = None) -> ChainReport:
        """Check every chain (or one): each problem names the instance, the seq and the decision."""
        report = ChainReport()
        async with self.db.transaction(write=False) as tx:  # one snapshot: shipping may go on meanwhile
            if instance is None:
                rows = await tx.fetchall("SELECT instance FROM chains UNION SELECT instance FROM decisions")
                names = sorted({r[0] for r in rows})
            else:
                names = [instance]
            for name in names:
                await self._verify_one(tx, name, report)
        return report

    async def _verify_one(self, tx: Tx, instance: str, report: ChainReport) -> None:
        row = await tx.fetchone(
            "SELECT instance, head_seq, head_hash, base_seq, base_hash, purged FROM chains WHERE instance = ?",
            (instance,),
        )
        problems: list[ChainProblem] = []

        def problem(kind: ProblemKind, seq: int | None, decision_id: str | None, detail: str) -> None:
            if len(problems) < MAX_PROBLEMS:
                problems.append(ChainProblem(instance, kind, seq, decision_id, detail))

        if row is None:
            found = await tx.fetchall(
                f"{SELECT_DECISIONS} WHERE instance = ? ORDER BY seq LIMIT ?", (instance, MAX_PROBLEMS)
            )
            for stored in map(stored_from_row, found):
                problem(ProblemKind.INSERTED, stored.seq, stored.decision_id, "no chain exists for this instance")
            report.problems += problems
            report.checked[instance] = 0
            return
        state = _chain(row)
        below = await tx.fetchall(
            f"{SELECT_DECISIONS} WHERE instance = ? AND seq <= ? ORDER BY seq LIMIT ?",
            (instance, state.base_seq, MAX_PROBLEMS),
        )
        for stored in map(stored_from_row, below):
            problem(
                ProblemKind.INSERTED, stored.seq, stored.decision_id, f"at or below the purge point {state.base_seq}"
            )
        expected, prev, checked, last_seen = state.base_seq + 1, state.base_hash, 0, state.base_seq
        while True:
            page = await tx.fetchall(
                f"{SELECT_DECISIONS} WHERE instance = ? AND seq > ? ORDER BY seq LIMIT ?",
                (instance, last_seen, VERIFY_PAGE),
            )
            for stored in map(stored_from_row, page):
                last_seen = stored.seq
                checked += 1
                if stored.seq > state.head_seq:
                    problem(ProblemKind.INSERTED, stored.seq, stored.decision_id, f"beyond the head {state.head_seq}")
                    continue
                if stored.seq > expected:
                    missing = f"seq {expected}" if stored.seq == expected + 1 else f"seq {expected}–{stored.seq - 1}"
                    problem(
                        ProblemKind.DELETED, expected, None, f"{missing} missing (before decision {stored.decision_id})"
                    )
                elif stored.prev_hash != prev:
                    problem(
                        ProblemKind.BROKEN_LINK,
                        stored.seq,
                        stored.decision_id,
                        f"does not link to seq {stored.seq - 1}: that record was replaced or this one re-linked",
                    )
                if stored.computed_hash() != stored.hash:
                    problem(ProblemKind.EDITED, stored.seq, stored.decision_id, "its content does not match its hash")
                expected, prev = stored.seq + 1, stored.hash
            if len(page) < VERIFY_PAGE:
                break
        if expected <= state.head_seq:
            missing = f"seq {expected}" if expected == state.head_seq else f"seq {expected}–{state.head_seq}"
            problem(ProblemKind.DELETED, expected, None, f"{missing} missing (up to the head)")
        elif prev != state.head_hash and expected == state.head_seq + 1:
            problem(ProblemKind.BROKEN_LINK, state.head_seq, None, "the last record is not the recorded head")
        report.problems += problems
        report.checked[instance] = checked

    async def purge(
        self,
        *,
        days: int | None = None,
        before: dt.datetime | None = None,
        batch: int = PURGE_BATCH,
        now: dt.datetime | None = None,
    ) -> PurgeReport:
        """Delete records older than `days` (or `before`), oldest first, in batches of `batch`.

        Deletes only a contiguous, intact prefix of each chain and moves the chain's base to its last
        record, so the rest still verifies; a record decided long ago but shipped late (spooled) waits
        for the records shipped before it. Stops at a broken link rather than deleting the evidence.
        """
        if (days is None) == (before is None):
            raise ValueError("give either days or before")
        if days is not None and days < 0:
            raise ValueError("days must not be negative")
        now = now or dt.datetime.now(dt.UTC)
        cutoff = before if before is not None else now - dt.timedelta(days=days or 0)
        report = PurgeReport(cutoff)
        for instance in await self.chains():
            report.deleted[instance] = 0
            while True:
                deleted, stop = await self._purge_batch(instance, cutoff, batch, now)
                report.deleted[instance] += deleted
                if stop is not None:
                    report.stopped.append(stop)
                if deleted < batch or stop is not None:
                    break
        return report

    async def _purge_batch(
        self, instance: str, cutoff: dt.datetime, batch: int, now: dt.datetime
    ) -> tuple[int, ChainProblem | None]:
        limit = format_time(cutoff)
        async with self.db.transaction(write=True) as tx:
            state = await self._lock_chain(tx, instance)
            page = await tx.fetchall(
                f"{SELECT_DECISIONS} WHERE instance = ? AND seq > ? ORDER BY seq LIMIT ?",
                (instance, state.base_seq, batch),
            )
            expected, prev, last, stop = state.base_seq + 1, state.base_hash, None, None
            for stored in map(stored_from_row, page):
                if format_time(stored.record.at) >= limit or stored.seq > state.head_seq:
                    break
                if stored.seq != expected or stored.prev_hash != prev or stored.computed_hash() != stored.hash:
                    stop = ChainProblem(
                        instance,
                        ProblemKind.BROKEN_LINK,
                        stored.seq,
                        stored.decision_id,
                        "the purge stops here: the chain is broken (run `gatekeeper log verify`)",
                    )
                    break
                expected, prev, last = stored.seq + 1, stored.hash, stored
            if last is None:
                return 0, stop
            deleted = await tx.execute(
                "DELETE FROM decisions WHERE instance = ? AND seq > ? AND seq <= ?",
                (instance, state.base_seq, last.seq),
            )
            await tx.execute(
                "UPDATE chains SET base_seq = ?, base_hash = ?, purged = purged + ?, purged_at = ? WHERE instance = ?",
                (last.seq, last.hash, deleted, format_time(now), instance),
            )
        return deleted, stop


async def _existing(tx: Tx, decision_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(decision_ids), EXISTING_CHUNK):
        chunk = decision_ids[start : start + EXISTING_CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = await tx.fetchall(f"SELECT decision_id FROM decisions WHERE decision_id IN ({marks})", chunk)  # noqa: S608
        found.update(r[0] for r in rows)
    return found


async def _chain_state(tx: Tx, instance: str) -> ChainState:
    row = await tx.fetchone(
        "SELECT instance, head_seq, head_hash, base_seq, base_hash, purged FROM chains WHERE instance = ?",
        (instance,),
    )
    assert row is not None
    return _chain(row)


def _chain(row: tuple[Any, ...]) -> ChainState:
    return ChainState(str(row[0]), int(row[1]), str(row[2]), int(row[3]), str(row[4]), int(row[5]))
