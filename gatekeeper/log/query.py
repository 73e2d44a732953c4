"""Reading the decision log (for the API, the UI and reports): filters, pages, summaries, CSV, audit trail.

Every list is newest first (`at`, then `decision_id`, both descending) and paged by keyset: the cursor
names the last record shown, so a page costs the same at any depth and a record shipped meanwhile never
shifts the pages. Nothing here writes.
"""

from __future__ import annotations

import base64
import binascii
import csv
import datetime as dt
import io
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from gatekeeper.core.model import Reason, Verdict
from gatekeeper.core.times import UTC, Zones, iso
from gatekeeper.log.record import DecisionRecord, StoredRecord, format_time, parse_time
from gatekeeper.log.sql import Database, Row, open_database

MAX_PAGE = 1000
DEFAULT_PAGE = 50
EXPORT_PAGE = 1000

# The SELECT list every reader uses; `_stored` reads a row in this order.
DECISION_COLUMNS = (
    "decision_id", "at", "instance", "campaign", "tenant", "number_masked", "number_hash", "verdict",
    "reason", "would_block", "regime", "explanation", "basis_reference", "rule", "generation", "uniqueid",
    "linkedid", "source", "latency_us", "index_error", "seq", "stream_id", "shipped_at", "prev_hash", "hash",
)  # fmt: skip
SELECT_DECISIONS = f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions"  # noqa: S608 (constant column list)

# The CSV export's columns: the public JSON form, in a stable order.
CSV_COLUMNS = (
    "decision_id", "at", "campaign", "tenant", "number_masked", "number_hash", "verdict", "reason",
    "would_block", "regime", "explanation", "basis_reference", "rule", "generation", "uniqueid", "linkedid",
    "source", "instance", "latency_us", "index_error", "seq", "stream_id", "shipped_at", "prev_hash", "hash",
)  # fmt: skip
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class CursorError(ValueError):
    """A pagination cursor that this log did not hand out."""


def stored_from_row(row: Row) -> StoredRecord:
    (decision_id, at, instance, campaign, tenant, masked, number_hash, verdict, reason, would_block, regime,
     explanation, basis_reference, rule, generation, uniqueid, linkedid, source, latency_us, index_error,
     seq, stream_id, shipped_at, prev_hash, digest) = row  # fmt: skip
    record = DecisionRecord(
        decision_id=decision_id,
        at=parse_time(at),
        instance=instance,
        campaign=campaign,
        tenant=tenant,
        number_masked=masked,
        number_hash=number_hash,
        verdict=Verdict(verdict),
        reason=Reason(reason),
        would_block=bool(would_block),
        regime=regime,
        explanation=explanation,
        basis_reference=basis_reference,
        rule=int(rule),
        generation=None if generation is None else int(generation),
        uniqueid=uniqueid,
        linkedid=linkedid,
        source=source,
        latency_us=int(latency_us),
        index_error=index_error,
    )
    return StoredRecord(record, int(seq), stream_id, parse_time(shipped_at), prev_hash, digest)


def row_from_stored(stored: StoredRecord) -> tuple[Any, ...]:
    r = stored.record
    return (
        r.decision_id, format_time(r.at), r.instance, r.campaign, r.tenant, r.number_masked, r.number_hash,
        r.verdict.value, r.reason.value, r.would_block, r.regime, r.explanation, r.basis_reference, r.rule,
        r.generation, r.uniqueid, r.linkedid, r.source, r.latency_us, r.index_error, stored.seq,
        stored.stream_id, format_time(stored.shipped_at), stored.prev_hash, stored.hash,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class DecisionFilter:
    """Which decisions to list; every field is optional and they combine with AND.

    `start` is inclusive, `end` exclusive (both timezone-aware).
    """

    start: dt.datetime | None = None
    end: dt.datetime | None = None
    campaign: str | None = None
    tenant: str | None = None
    verdict: Verdict | None = None
    reason: Reason | None = None
    number_hash: str | None = None
    instance: str | None = None

    def where(self) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.start is not None:
            clauses.append("at >= ?")
            params.append(format_time(self.start))
        if self.end is not None:
            clauses.append("at < ?")
            params.append(format_time(self.end))
        for column, value in (
            ("campaign", self.campaign),
            ("tenant", self.tenant),
            ("verdict", self.verdict.value if self.verdict else None),
            ("reason", self.reason.value if self.reason else None),
            ("number_hash", self.number_hash),
            ("instance", self.instance),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return clauses, params


ALL = DecisionFilter()


def encode_cursor(record: DecisionRecord) -> str:
    raw = f"{format_time(record.at)}|{record.decision_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, decision_id = raw.partition("|")
        parse_time(at)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise CursorError(f"not a valid cursor: {cursor[:40]!r}") from None
    if not decision_id:
        raise CursorError(f"not a valid cursor: {cursor[:40]!r}")
    return at, decision_id


@dataclass(frozen=True, slots=True)
class Page:
    items: tuple[StoredRecord, ...]
    next: str | None  # cursor for the following (older) page; None on the last page


@dataclass(frozen=True, slots=True)
class SummaryRow:
    day: dt.date  # in the summary's time zone
    campaign: str
    verdict: Verdict
    reason: Reason
    would_block: bool
    count: int


@dataclass(frozen=True, slots=True)
class Summary:
    """Decision counts per day (in `tz`), campaign, verdict and reason over [start, end] (whole days)."""

    start: dt.date
    end: dt.date
    tz: str
    rows: tuple[SummaryRow, ...]

    def days(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    def blocked_per_reason(self) -> dict[dt.date, dict[str, int]]:
        """Blocked calls per day and reason (every day of the range present, possibly empty)."""
        return self._blocked_by(lambda r: r.reason.value)

    def blocked_per_campaign(self) -> dict[dt.date, dict[str, int]]:
        return self._blocked_by(lambda r: r.campaign)

    def would_block_per_reason(self) -> dict[dt.date, dict[str, int]]:
        """Calls monitor-mode campaigns let through that enforcement would have blocked."""
        out: dict[dt.date, dict[str, int]] = {day: {} for day in self.days()}
        for r in self.rows:
            if r.would_block:
                out[r.day][r.reason.value] = out[r.day].get(r.reason.value, 0) + r.count
        return out

    def totals(self) -> dict[str, int]:
        totals = {"allow": 0, "block": 0, "would_block": 0}
        for r in self.rows:
            totals[r.verdict.value] += r.count
            if r.would_block:
                totals["would_block"] += r.count
        return totals

    def _blocked_by(self, key: Any) -> dict[dt.date, dict[str, int]]:
        out: dict[dt.date, dict[str, int]] = {day: {} for day in self.days()}
        for r in self.rows:
            if r.verdict is Verdict.BLOCK:
                name = key(r)
                out[r.day][name] = out[r.day].get(name, 0) + r.count
        return out


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: dt.datetime
    actor: str
    role: str
    action: str
    number_hash: str | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": format_time(self.at),
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "number_hash": self.number_hash,
            "details": self.details,
        }


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    # A spreadsheet would run a cell starting with these as a formula (CSV injection): quote it.
    return "'" + text if text.startswith(_FORMULA_START) else text


class LogReader:
    """Queries over a decision-log database (the schema must exist: see `LogStore.open`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def from_dsn(cls, dsn: str) -> LogReader:
        return cls(open_database(dsn))

    async def close(self) -> None:
        await self.db.close()

    async def get(self, decision_id: str) -> StoredRecord | None:
        async with self.db.transaction(write=False) as tx:
            row = await tx.fetchone(f"{SELECT_DECISIONS} WHERE decision_id = ?", (decision_id,))
        return None if row is None else stored_from_row(row)

    async def list_decisions(
        self, where: DecisionFilter = ALL, *, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> Page:
        """One page, newest first; pass `page.next` back as `cursor` for the following one."""
        if not 0 < limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        clauses, params = where.where()
        if cursor is not None:
            at, decision_id = decode_cursor(cursor)
            clauses.append("(at < ? OR (at = ? AND decision_id < ?))")
            params += [at, at, decision_id]
        sql = SELECT_DECISIONS + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
        sql += " ORDER BY at DESC, decision_id DESC LIMIT ?"
        async with self.db.transaction(write=False) as tx:
            rows = await tx.fetchall(sql, (*params, limit + 1))
        items = tuple(stored_from_row(r) for r in rows[:limit])
        more = len(rows) > limit
        return Page(items, encode_cursor(items[-1].record) if more and items else None)

    async def iter_decisions(
        self, where: DecisionFilter = ALL, *, page: int = EXPORT_PAGE
    ) -> AsyncIterator[StoredRecord]:
        """Every matching decision, newest first, fetched a page at a time (short transactions)."""
        cursor: str | None = None
        while True:
            result = await self.list_decisions(where, limit=page, cursor=cursor)
            for item in result.items:
                yield item
            if result.next is None:
                return
            cursor = result.next

    async def decisions_for_number(self, number_hash: str) -> list[StoredRecord]:
        """All decisions about one number (GDPR art. 15 access report), newest first."""
        return [r async for r in self.iter_decisions(DecisionFilter(number_hash=number_hash))]

    async def count(self, where: DecisionFilter = ALL) -> int:
        clauses, params = where.where()
        sql = "SELECT COUNT(*) FROM decisions" + (f" WHERE {' AND '.join(clauses)}" if clauses else "")  # noqa: S608
        async with self.db.transaction(write=False) as tx:
            row = await tx.fetchone(sql, params)
        return int(row[0]) if row is not None else 0

    async def summary(
        self,
        start: dt.date,
        end: dt.date,
        *,
        tz: str = "UTC",
        tenant: str | None = None,
        campaign: str | None = None,
    ) -> Summary:
        """Counts per local day over [start, end] (inclusive).

        SQL counts per UTC hour; the hours are then folded into days of `tz`. Exact for every time zone
        whose offset is a whole number of hours (all of Europe).
        """
        if end < start:
            raise ValueError("the summary's end lies before its start")
        zone = ZoneInfo(tz)
        lower = dt.datetime.combine(start, dt.time(), zone)
        upper = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), zone)
        clauses, params = DecisionFilter(start=lower, end=upper, tenant=tenant, campaign=campaign).where()
        sql = (
            "SELECT substr(at, 1, 13), campaign, verdict, reason, would_block, COUNT(*) FROM decisions "  # noqa: S608
            f"WHERE {' AND '.join(clauses)} GROUP BY 1, 2, 3, 4, 5"
        )
        async with self.db.transaction(write=False) as tx:
            rows = await tx.fetchall(sql, params)
        counts: dict[tuple[dt.date, str, Verdict, Reason, bool], int] = defaultdict(int)
        for hour, campaign_id, verdict, reason, would_block, n in rows:
            day = dt.datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=dt.UTC).astimezone(zone).date()
            counts[(day, campaign_id, Verdict(verdict), Reason(reason), bool(would_block))] += int(n)
        ordered = sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2].value, kv[0][3].value))
        return Summary(start, end, tz, tuple(SummaryRow(*key, n) for key, n in ordered))

    async def export_csv(self, where: DecisionFilter = ALL, *, zones: Zones | None = None) -> AsyncIterator[str]:
        """The matching decisions as CSV text chunks (header first), streamed a page at a time.

        `at` and `shipped_at` are ISO 8601 with the offset of the decision's campaign's zone (`zones`;
        UTC without).
        """
        zones = zones or Zones({}, UTC)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        pending = 0
        async for stored in self.iter_decisions(where):
            data = stored.to_json()
            zone = zones.of_campaign(stored.record.campaign)
            data.update(at=iso(stored.record.at, zone), shipped_at=iso(stored.shipped_at, zone))
            writer.writerow([_csv_cell(data[c]) for c in CSV_COLUMNS])
            pending += 1
            if pending >= EXPORT_PAGE:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
                pending = 0
        yield buffer.getvalue()

    async def list_audit(
        self, *, limit: int = DEFAULT_PAGE, before_id: int | None = None, number_hash: str | None = None
    ) -> list[AuditEntry]:
        """Changes made through the API, UI and CLI, newest first (`before_id` pages back)."""
        if not 0 < limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        clauses: list[str] = []
        params: list[Any] = []
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        if number_hash is not None:
            clauses.append("number_hash = ?")
            params.append(number_hash)
        sql = "SELECT id, at, actor, role, action, number_hash, details FROM audit"
        sql += (f" WHERE {' AND '.join(clauses)}" if clauses else "") + " ORDER BY id DESC LIMIT ?"
        async with self.db.transaction(write=False) as tx:
            rows = await tx.fetchall(sql, (*params, limit))
        return [
            AuditEntry(int(i), parse_time(at), actor, role, action, nh, json.loads(details))
            for i, at, actor, role, action, nh, details in rows
        ]
