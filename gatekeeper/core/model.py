"""Values the decision core works with: verdicts, reasons, campaigns, calls, facts and decisions."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from gatekeeper.core.calendar import CallingHours


class Verdict(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"


class Reason(StrEnum):
    """Reason codes of POLICY.md §2; identical in the CLI, API, log, channel variables and metrics."""

    EMERGENCY = "emergency"
    UNKNOWN_CAMPAIGN = "unknown-campaign"
    INVALID_NUMBER = "invalid-number"
    SERVICE_CALL = "service-call"
    CALLER_ID = "caller-id"
    INDEX_UNAVAILABLE = "index-unavailable"
    SUPPRESSED = "suppressed"
    REGISTRY = "registry"
    OBJECTION = "objection"
    NO_BASIS = "no-basis"
    OUTSIDE_HOURS = "outside-hours"
    ATTEMPT_LIMIT = "attempt-limit"
    CONSENT = "consent"
    CUSTOMER = "customer"
    FORMER_CUSTOMER = "former-customer"


class Purpose(StrEnum):
    TELEMARKETING = "telemarketing"
    SERVICE = "service"


class Organisation(StrEnum):
    COMMERCIAL = "commercial"
    CHARITY = "charity"
    LOTTERY = "lottery"
    PUBLISHER = "publisher"


class Mode(StrEnum):
    ENFORCE = "enforce"
    MONITOR = "monitor"


class NumberKind(StrEnum):
    VALID = "valid"
    EMERGENCY = "emergency"
    INVALID = "invalid"


# A fact's bound: a whole day (in the campaign's time zone) or an exact instant (timezone-aware).
Moment = dt.date | dt.datetime


@dataclass(frozen=True, slots=True)
class Number:
    """The result of normalising dialled digits. `e164` is set only for valid numbers."""

    kind: NumberKind
    e164: str | None = None
    region: str | None = None
    country_code: int = 0
    time_zones: tuple[str, ...] = ()
    problem: str | None = None  # why a number is invalid, for the explanation
    masked_input: str = ""  # emergency/short numbers are shown as dialled

    @property
    def masked(self) -> str:
        """`+31 6 ****5678`: country code, first digit and last four; never the whole number."""
        if self.kind is NumberKind.EMERGENCY:
            return self.masked_input
        if self.e164 is None:
            return "(invalid)"
        cc = str(self.country_code) if self.country_code else ""
        nsn = self.e164[1 + len(cc) :]
        if len(nsn) <= 6:
            return f"+{cc} ****{nsn[-2:]}"
        return f"+{cc} {nsn[0]} ****{nsn[-4:]}"


@dataclass(frozen=True, slots=True)
class Consent:
    start: Moment
    end: Moment | None = None
    reference: str = ""


@dataclass(frozen=True, slots=True)
class Relationship:
    """A customer relationship; `end` None means it is active."""

    start: Moment
    end: Moment | None = None
    reference: str = ""


@dataclass(frozen=True, slots=True)
class Objection:
    at: Moment
    reference: str = ""


@dataclass(frozen=True, slots=True)
class Suppression:
    at: Moment
    reference: str = ""


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the consent index holds for one (tenant, number), plus the global suppressions."""

    consents: tuple[Consent, ...] = ()
    relationships: tuple[Relationship, ...] = ()
    objections: tuple[Objection, ...] = ()
    suppressions: tuple[Suppression, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.consents or self.relationships or self.objections or self.suppressions)


NO_FACTS = Facts()


@dataclass(frozen=True, slots=True)
class Regime:
    """The legal bases a regime accepts.

    Consent covering the call time is always a basis. A customer or former-customer relationship is a
    basis only for the organisations in `relationship_organisations`.
    """

    name: str
    relationship_organisations: frozenset[Organisation]
    former_customer_years: int = 3
    summary: str = ""

    def accepts_relationship(self, organisation: Organisation) -> bool:
        return organisation in self.relationship_organisations


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    code: str
    timezone: str
    regimes: tuple[tuple[dt.date, Regime], ...]  # ascending; the first also applies before its date
    hours: CallingHours
    rules: tuple[str, ...]  # names of the policy rules after the common ones, in order

    def regime_on(self, day: dt.date) -> Regime:
        current = self.regimes[0][1]
        for start, regime in self.regimes:
            if day >= start:
                current = regime
            else:
                break
        return current


@dataclass(frozen=True, slots=True)
class Campaign:
    id: str
    tenant: str
    jurisdiction: Jurisdiction
    purpose: Purpose = Purpose.TELEMARKETING
    organisation: Organisation = Organisation.COMMERCIAL
    region: str = "NL"
    mode: Mode = Mode.ENFORCE
    caller_ids: frozenset[str] = frozenset()  # E.164; empty = no registered pool configured


@dataclass(frozen=True, slots=True)
class Call:
    """One outbound call attempt as the core sees it.

    `caller_id` None means the call carries no caller-ID information at all (e.g. a CLI check without
    --caller-id); rule 5 then does not apply. `presentation` is Asterisk's numeric calling presentation.
    """

    number: Number
    at: dt.datetime  # timezone-aware
    caller_id: str | None = None
    presentation: int | None = None
    callback_requested: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: Reason
    explanation: str
    would_block: bool = False
    regime: str | None = None
    basis_reference: str | None = None
    rule: int = 0  # the number of the POLICY.md rule that decided

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW
