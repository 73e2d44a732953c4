"""What the API and the UI do, in one place: check a call, change facts, answer an access request.

Each change validates everything first (nothing is written for bad input), then writes to the consent
index (write-through: the next call on every instance sees it), then records who did it in the audit
table. Only masked numbers and keyed hashes leave this module; a typed number goes no further than
the hash and the index.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from gatekeeper.config import Settings
from gatekeeper.core.model import Consent, Facts, Moment, Objection, Relationship, Suppression
from gatekeeper.core.numbers import mask_e164
from gatekeeper.core.times import Zones, iso
from gatekeeper.gate import CallRequest, EvidenceError, Gate
from gatekeeper.index.codec import Kind
from gatekeeper.index.rows import Row, RowError
from gatekeeper.index.store import ConsentIndex, is_unavailable
from gatekeeper.log.query import LogReader
from gatekeeper.log.record import StoredRecord, format_time
from gatekeeper.log.sql import DATABASE_ERRORS, SchemaError
from gatekeeper.log.store import LogStore
from gatekeeper.record import DecisionRecord
from gatekeeper.web.auth import Principal
from gatekeeper.web.inputs import ApiError, Numbers, invalid, row_error

log = logging.getLogger(__name__)
INDEX_TIMEOUT = 5.0  # seconds for one write or report lookup (not the call path: a person waits)
OPEN_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, SchemaError)
FACT_KINDS = {"consent": Kind.CONSENT, "customer": Kind.CUSTOMER}


class Action:
    """Audit actions (the `action` column)."""

    CONSENT = "consent-upsert"
    OBJECTION = "objection"
    ERASURE = "erasure"
    ACCESS_REPORT = "access-report"  # a report produced (API or UI CSV)
    LOOKUP = "number-lookup"  # the UI's look-up page showed the same facts


def index_unavailable(exc: BaseException) -> ApiError:
    return ApiError(503, "index-unavailable", f"the consent index is unavailable ({type(exc).__name__}); try again")


def log_unavailable(exc: BaseException) -> ApiError:
    return ApiError(503, "log-unavailable", f"the decision log database is unavailable ({type(exc).__name__})")


class LogAccess:
    """The decision log for the web: opened (migrated) on first use, so the gate never waits for SQL."""

    def __init__(self, reader: LogReader, store: LogStore) -> None:
        self.reader = reader
        self.store = store
        self._opened = False
        self._lock = asyncio.Lock()

    async def ready(self) -> None:
        if self._opened:
            return
        async with self._lock:
            if not self._opened:
                try:
                    await self.store.open()
                except OPEN_ERRORS as exc:
                    log.warning("the decision log database is unavailable: %s", type(exc).__name__)
                    raise log_unavailable(exc) from None
                self._opened = True

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[LogReader]:
        """The reader, with database failures turned into `log-unavailable`."""
        await self.ready()
        try:
            yield self.reader
        except DATABASE_ERRORS as exc:
            log.warning("decision log query failed: %s", type(exc).__name__)
            raise log_unavailable(exc) from None

    async def close(self) -> None:
        await self.reader.close()
        if self.store is not self.reader:
            await self.store.close()


@dataclass(frozen=True, slots=True)
class ConsentInput:
    tenant: str
    e164: str
    kind: str
    entry: bytes
    reference: str


@dataclass(frozen=True, slots=True)
class ObjectionInput:
    tenant: str
    e164: str
    reference: str


@dataclass(frozen=True, slots=True)
class ErasureInput:
    e164: str
    reference: str


@dataclass(frozen=True, slots=True)
class Done:
    """The outcome of a change, as the API returns it (numbers masked)."""

    action: str
    number_masked: str
    number_hash: str
    at: dt.datetime
    details: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "number_masked": self.number_masked,
            "number_hash": self.number_hash,
            "at": format_time(self.at),
            **self.details,
        }


def moment_json(moment: Moment | None) -> str | None:
    if moment is None:
        return None
    if isinstance(moment, dt.datetime):
        return format_time(moment)
    return moment.isoformat()


@dataclass(frozen=True, slots=True)
class TenantFacts:
    tenant: str
    generation: int | None
    facts: Facts

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "generation": self.generation,
            "consents": [_fact(c) for c in self.facts.consents],
            "customer": [_fact(r) for r in self.facts.relationships],
            "objections": [_fact(o) for o in self.facts.objections],
        }


def _fact(fact: Consent | Relationship | Objection | Suppression) -> dict[str, Any]:
    if isinstance(fact, Consent | Relationship):
        return {"start": moment_json(fact.start), "end": moment_json(fact.end), "reference": fact.reference}
    return {"at": moment_json(fact.at), "reference": fact.reference}


REPORT_CSV_COLUMNS = (
    "record", "tenant", "kind", "start", "end", "reference", "decision_id", "at", "campaign", "verdict", "reason",
    "would_block", "explanation", "basis_reference", "number_masked", "number_hash",
)  # fmt: skip
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text  # no spreadsheet formulas (CSV injection)


@dataclass(frozen=True, slots=True)
class Report:
    """GDPR art. 15: what gatekeeper holds about one number (facts per tenant, suppressions, decisions)."""

    number_masked: str
    number_hash: str
    generated_at: dt.datetime
    tenants: tuple[TenantFacts, ...]
    suppressions: tuple[Suppression, ...]
    decisions: tuple[StoredRecord, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "number_masked": self.number_masked,
            "number_hash": self.number_hash,
            "generated_at": format_time(self.generated_at),
            "tenants": [t.to_json() for t in self.tenants],
            "suppressions": [_fact(s) for s in self.suppressions],
            "decisions": [d.to_json() for d in self.decisions],
        }

    def rows(self, zones: Zones) -> list[dict[str, Any]]:
        """The report as CSV rows; times are ISO 8601 with the offset of their tenant's or campaign's zone."""
        out: list[dict[str, Any]] = []
        for t in self.tenants:
            zone = zones.of_tenant(t.tenant)
            for kind, facts in (("consent", t.facts.consents), ("customer", t.facts.relationships)):
                for f in facts:
                    end = None if f.end is None else iso(f.end, zone)
                    out.append({"record": "fact", "tenant": t.tenant, "kind": kind, "start": iso(f.start, zone),
                                "end": end, "reference": f.reference})  # fmt: skip
            for o in t.facts.objections:
                out.append({"record": "fact", "tenant": t.tenant, "kind": "objection", "start": iso(o.at, zone),
                            "reference": o.reference})  # fmt: skip
        for s in self.suppressions:
            out.append({"record": "fact", "kind": "suppression", "start": iso(s.at, zones.default),
                        "reference": s.reference})  # fmt: skip
        for d in self.decisions:
            data = d.to_json()
            data["at"] = iso(d.record.at, zones.of_campaign(d.record.campaign))
            out.append(
                {"record": "decision", **{c: data.get(c) for c in REPORT_CSV_COLUMNS[6:]}, "tenant": d.record.tenant}
            )
        for row in out:
            row.setdefault("number_masked", self.number_masked)
            row.setdefault("number_hash", self.number_hash)
        return out

    def csv(self, zones: Zones) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(REPORT_CSV_COLUMNS)
        for row in self.rows(zones):
            writer.writerow([_cell(row.get(c)) for c in REPORT_CSV_COLUMNS])
        return buffer.getvalue()


class Compliance:
    """The operations behind the API and the UI."""

    def __init__(self, settings: Settings, gate: Gate, dry: Gate, index: ConsentIndex, log_access: LogAccess) -> None:
        self.settings = settings
        self.gate = gate
        self.dry = dry  # `record: false`: decided like a call, recorded and counted nowhere
        self.index = index
        self.log = log_access
        self.numbers = Numbers(settings)
        self.zones = Zones(settings.campaigns, self.numbers.zone)  # where the times people read are shown

    def number_hash(self, e164: str) -> str:
        return self.index.keys.number_hash(e164)

    def mask(self, e164: str) -> str:
        return mask_e164(e164)

    # -- inputs --------------------------------------------------------------------------------------

    def tenant(self, tenant: str | None, campaign: str | None) -> str:
        """The tenant named directly or through one of its campaigns (exactly one of the two)."""
        if tenant is not None and campaign is not None:
            raise invalid("campaign", "give either tenant or campaign, not both")
        if campaign is not None:
            found = self.settings.campaign(campaign)
            if found is None:
                raise ApiError(400, "unknown-campaign", f"campaign: no campaign {campaign[:64]!r} is configured",
                               "campaign")  # fmt: skip
            return found.tenant
        if tenant is None or not tenant.strip():
            raise invalid("tenant", "missing")
        if tenant not in self.settings.tenants:
            raise ApiError(400, "unknown-tenant", f"tenant: no campaign of tenant {tenant[:64]!r} is configured",
                           "tenant")  # fmt: skip
        return tenant

    def _row(self, raw: Mapping[str, str]) -> Row:
        row = self.numbers.validator().validate(0, raw)
        if isinstance(row, RowError):
            raise row_error(row)
        return row

    def consent_input(
        self, tenant: str | None, campaign: str | None, number: str, kind: str, start: str, end: str | None,
        reference: str | None,
    ) -> ConsentInput:  # fmt: skip
        name = self.tenant(tenant, campaign)
        if kind not in FACT_KINDS:
            raise invalid("kind", f"{kind[:40]!r} is not one of {', '.join(FACT_KINDS)}")
        if not start.strip():
            raise invalid("start", f"missing: a {kind} needs a start date")
        self.numbers.e164("number", number)  # the length check first
        raw = {
            "tenant": name,
            "number": number,
            "kind": kind,
            "start": start,
            "end": end or "",
            "reference": reference or "",
        }
        row = self._row(raw)
        return ConsentInput(name, row.e164, kind, row.entry, (reference or "").strip())

    def objection_input(
        self, tenant: str | None, campaign: str | None, number: str, reference: str | None
    ) -> ObjectionInput:
        name = self.tenant(tenant, campaign)
        e164 = self.numbers.e164("number", number)
        today = dt.datetime.now(self.numbers.zone).date().isoformat()
        self._row({"tenant": name, "number": number, "kind": "objection", "start": today, "reference": reference or ""})
        return ObjectionInput(name, e164, (reference or "").strip())

    def erasure_input(self, number: str, reference: str | None) -> ErasureInput:
        e164 = self.numbers.e164("number", number)
        self._row({"tenant": "", "number": number, "kind": "suppression", "reference": reference or ""})
        return ErasureInput(e164, (reference or "").strip() or "erasure")

    # -- calls ---------------------------------------------------------------------------------------

    async def check(self, request: CallRequest, *, record: bool) -> DecisionRecord:
        try:
            return await (self.gate if record else self.dry).check(request)
        except EvidenceError:
            raise ApiError(503, "log-unavailable", "the decision could not be recorded (neither Redis nor the "
                           "spool took it), so it is not given; tell an administrator") from None  # fmt: skip

    # -- changes -------------------------------------------------------------------------------------

    async def _audit(self, who: Principal, via: str, action: str, number_hash: str, details: Mapping[str, Any]) -> None:
        try:
            await self.log.store.add_audit(
                who.name, who.role.value, action, number_hash=number_hash, details={"via": via, **details}
            )
        except DATABASE_ERRORS as exc:
            log.error("%s by %s was made but could not be written to the audit table: %s", action, who.name,
                      type(exc).__name__)  # fmt: skip
            raise ApiError(503, "log-unavailable", f"the {action} was made, but the audit table is unavailable "
                           f"({type(exc).__name__}); tell an administrator") from None  # fmt: skip

    @contextlib.asynccontextmanager
    async def _index(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(INDEX_TIMEOUT):
                yield
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.warning("consent index write failed: %s", type(exc).__name__)
            raise index_unavailable(exc) from None

    async def upsert(self, who: Principal, via: str, item: ConsentInput) -> Done:
        await self.log.ready()  # the audit must be possible before anything changes
        async with self._index():
            result = await self.index.upsert(item.tenant, item.e164, [item.entry])
        details = {"tenant": item.tenant, "kind": item.kind, "created": result.created, "added": result.added,
                   "suppressed": result.suppressed}  # fmt: skip
        await self._audit(who, via, Action.CONSENT, result.key.hash_hex, {**details, "reference": item.reference})
        return Done(Action.CONSENT, self.mask(item.e164), result.key.hash_hex, dt.datetime.now(dt.UTC), details)

    async def object(self, who: Principal, via: str, item: ObjectionInput) -> Done:
        await self.log.ready()
        at = self.gate.clock()  # the service's time (the real time; in the demo, the demo's)
        async with self._index():
            key = await self.index.object(item.tenant, item.e164, at, item.reference)
        await self._audit(
            who, via, Action.OBJECTION, key.hash_hex, {"tenant": item.tenant, "reference": item.reference}
        )
        return Done(Action.OBJECTION, self.mask(item.e164), key.hash_hex, at, {"tenant": item.tenant})

    async def erase(self, who: Principal, via: str, item: ErasureInput) -> Done:
        await self.log.ready()
        at = self.gate.clock()  # the service's time (the real time; in the demo, the demo's)
        async with self._index():
            removed = await self.index.erase(item.e164, at, item.reference)
        number_hash = self.number_hash(item.e164)
        await self._audit(who, via, Action.ERASURE, number_hash, {"removed": removed, "reference": item.reference})
        return Done(Action.ERASURE, self.mask(item.e164), number_hash, at, {"removed": removed})

    # -- access report -------------------------------------------------------------------------------

    async def report(self, who: Principal, via: str, e164: str, *, action: str = Action.ACCESS_REPORT) -> Report:
        """GDPR art. 15 for one number; the access itself is audited (who looked at which hash)."""
        number_hash = self.number_hash(e164)
        tenants: list[TenantFacts] = []
        suppressions: tuple[Suppression, ...] = ()
        async with self._index():
            for tenant in sorted(self.settings.tenants):
                found = await self.index.lookup(tenant, e164)
                suppressions = found.facts.suppressions
                facts = Facts(found.facts.consents, found.facts.relationships, found.facts.objections)
                tenants.append(TenantFacts(tenant, found.generation, facts))
        async with self.log.use() as reader:
            decisions = await reader.decisions_for_number(number_hash)
        await self._audit(who, via, action, number_hash, {"decisions": len(decisions)})
        return Report(self.mask(e164), number_hash, dt.datetime.now(dt.UTC), tuple(tenants), suppressions,
                      tuple(decisions))  # fmt: skip
