"""The decision procedure of POLICY.md §2: ordered rules, the first that decides gives the verdict.

`decide(call, campaign, facts)` is a pure function of its inputs. `facts` is None when the consent index
could not answer (rule 6). `screen(call, campaign)` runs the rules that need no facts, so the gate can
skip the index for calls those rules already decide.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload
from zoneinfo import ZoneInfo

from gatekeeper.core.model import (
    Call,
    Campaign,
    Consent,
    Decision,
    Facts,
    Jurisdiction,
    Mode,
    Moment,
    NumberKind,
    Purpose,
    Reason,
    Regime,
    Relationship,
    Verdict,
)
from gatekeeper.core.numbers import normalise_e164
from gatekeeper.core.times import shown

# Asterisk calling presentation: bits 0x60 give the presentation indicator (0x00 allowed,
# 0x20 restricted, 0x40 number unavailable); the low bits are the screening indicator.
_PRESENTATION_MASK = 0x60
_PRESENTATION_ALLOWED = 0x00
T = TypeVar("T")
_NO_CALLER_ID = frozenset({"", "unknown", "anonymous", "restricted", "private", "unavailable", "withheld"})


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    reason: Reason
    explanation: str
    basis_reference: str | None = None


@functools.cache
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def add_years(day: dt.date, years: int) -> dt.date:
    """The same calendar day `years` later; 29 February becomes 28 February."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


class _lazy(Generic[T]):
    """A per-instance cached property without functools.cached_property's lock (Python 3.11)."""

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__

    @overload
    def __get__(self, obj: None, cls: type | None = None) -> _lazy[T]: ...
    @overload
    def __get__(self, obj: object, cls: type | None = None) -> T: ...
    def __get__(self, obj: object | None, cls: type | None = None) -> T | _lazy[T]:
        if obj is None:
            return self
        value = self.func(obj)
        obj.__dict__[self.name] = value
        return value


class Context:
    """One decision's inputs and the values derived from them, each computed at most once."""

    def __init__(self, call: Call, campaign: Campaign, facts: Facts | None = None) -> None:
        self.call = call
        self.campaign = campaign
        self.facts = facts  # set by Pending.decide; None means the index could not answer
        self.jurisdiction: Jurisdiction = campaign.jurisdiction
        self.tz = zone(self.jurisdiction.timezone)
        self.local = call.at.astimezone(self.tz)
        self.today = self.local.date()
        self.regime: Regime = self.jurisdiction.regime_on(self.today)

    # -- fact helpers: whole days in the campaign's time zone, instants as instants
    def day(self, moment: Moment) -> dt.date:
        return moment.astimezone(self.tz).date() if isinstance(moment, dt.datetime) else moment

    def started(self, moment: Moment) -> bool:
        if isinstance(moment, dt.datetime):
            return moment <= self.call.at
        return moment <= self.today

    def not_ended(self, end: Moment | None) -> bool:
        if end is None:
            return True
        if isinstance(end, dt.datetime):
            return self.call.at <= end
        return self.today <= end

    @_lazy
    def hours(self) -> tuple[bool, str]:
        """Whether the call time is within the calling hours in every time zone of the called number."""
        zones = self.call.number.time_zones or (self.jurisdiction.timezone,)
        descriptions = []
        for name in zones:
            verdict = self.jurisdiction.hours.check(self.call.at.astimezone(zone(name)))
            if not verdict.allowed:
                return False, verdict.description
            descriptions.append(verdict.description)
        return True, "; ".join(descriptions)

    @_lazy
    def facts_or_empty(self) -> Facts:
        return self.facts if self.facts is not None else Facts()

    @_lazy
    def objection_day(self) -> dt.date | None:
        """The latest objection dated on or before the call (later ones do not count for it)."""
        days = [self.day(o.at) for o in self.facts_or_empty.objections if self.started(o.at)]
        return max(days) if days else None

    @_lazy
    def covering_consents(self) -> list[Consent]:
        return [c for c in self.facts_or_empty.consents if self.started(c.start) and self.not_ended(c.end)]

    @_lazy
    def valid_consents(self) -> list[Consent]:
        """Covering consents an objection does not override (given after it, not on the same day)."""
        objected = self.objection_day
        consents = self.covering_consents
        if objected is None:
            return consents
        return [c for c in consents if self.day(c.start) > objected]

    @_lazy
    def basis(self) -> Outcome | None:
        """The legal basis under the regime in force (rule 10), or None."""
        return _basis(self)

    @_lazy
    def relationship(self) -> tuple[Reason | None, Relationship | None]:
        """(customer | former-customer | None, the relationship with the latest end that has started)."""
        started = [r for r in self.facts_or_empty.relationships if self.started(r.start)]
        if not started:
            return None, None
        active = [r for r in started if r.end is None]
        if active:
            return Reason.CUSTOMER, max(active, key=lambda r: self.day(r.start))
        latest = max(started, key=lambda r: _sort_key(r.end))
        assert latest.end is not None
        if self.not_ended(latest.end):
            return Reason.CUSTOMER, latest
        if self.today <= add_years(self.day(latest.end), self.regime.former_customer_years):
            return Reason.FORMER_CUSTOMER, latest
        return None, latest


def _sort_key(moment: Moment | None) -> dt.datetime:
    if moment is None:
        return dt.datetime.max.replace(tzinfo=dt.UTC)
    if isinstance(moment, dt.datetime):
        return moment
    return dt.datetime.combine(moment, dt.time.max, tzinfo=dt.UTC)


def _ref(reference: str) -> str:
    return f" (ref {reference})" if reference else ""


def _fmt(moment: Moment, ctx: Context) -> str:
    """A fact's bound as people read it: an instant in the campaign's zone with its offset, a day as a date."""
    return shown(moment, ctx.tz)


# -- the rules ---------------------------------------------------------------------------------------


def _invalid_number(ctx: Context) -> Outcome | None:
    number = ctx.call.number
    if number.kind is NumberKind.INVALID:
        why = number.problem or "not a valid number"
        return Outcome(Verdict.BLOCK, Reason.INVALID_NUMBER, f"The dialled digits are not a callable number: {why}.")
    return None


def _service_call(ctx: Context) -> Outcome | None:
    if ctx.campaign.purpose is Purpose.SERVICE:
        return Outcome(
            Verdict.ALLOW,
            Reason.SERVICE_CALL,
            f"Campaign {ctx.campaign.id!r} is a service campaign (not telemarketing); the telemarketing "
            "rules do not apply.",
        )
    return None


def _caller_id(ctx: Context) -> Outcome | None:
    call = ctx.call
    if call.caller_id is None and call.presentation is None:
        return None  # the call carries no caller-ID information: the rule does not apply
    caller = (call.caller_id or "").strip()
    if call.presentation is not None and (call.presentation & _PRESENTATION_MASK) != _PRESENTATION_ALLOWED:
        return Outcome(
            Verdict.BLOCK,
            Reason.CALLER_ID,
            f"The caller ID is withheld or unavailable (presentation {call.presentation}); "
            "anonymous telemarketing calls are not allowed.",
        )
    if caller.lower() in _NO_CALLER_ID:
        return Outcome(
            Verdict.BLOCK, Reason.CALLER_ID, "The call presents no caller ID; anonymous calls are not allowed."
        )
    pool = ctx.campaign.caller_ids
    if pool:
        e164 = _caller_e164(caller, ctx.campaign.region)
        if e164 not in pool:
            return Outcome(
                Verdict.BLOCK,
                Reason.CALLER_ID,
                f"The caller ID is not one of the {len(pool)} registered outbound numbers of campaign "
                f"{ctx.campaign.id!r}.",
            )
    return None


@functools.lru_cache(maxsize=1024)
def _caller_e164(caller: str, region: str) -> str | None:
    return normalise_e164(caller, region)


def _index_unavailable(ctx: Context) -> Outcome | None:
    if ctx.facts is None:
        return Outcome(
            Verdict.BLOCK,
            Reason.INDEX_UNAVAILABLE,
            "The consent index did not answer within its time budget; the call is blocked (fail closed).",
        )
    return None


def _suppressed(ctx: Context) -> Outcome | None:
    hits = [s for s in ctx.facts_or_empty.suppressions if ctx.started(s.at)]
    if hits:
        first = min(hits, key=lambda s: _sort_key(s.at))
        return Outcome(
            Verdict.BLOCK,
            Reason.SUPPRESSED,
            f"The number is on the global suppression list since {_fmt(first.at, ctx)}{_ref(first.reference)}.",
        )
    return None


def _objection(ctx: Context) -> Outcome | None:
    objected = ctx.objection_day
    if objected is None or ctx.valid_consents:
        return None
    overridden = []
    if ctx.covering_consents:
        latest = max(ctx.covering_consents, key=lambda c: _sort_key(c.start))
        overridden.append(f"the consent of {_fmt(latest.start, ctx)}")
    if ctx.relationship[0] is not None:
        overridden.append("the customer relationship")
    what = f"; it overrides {' and '.join(overridden)}" if overridden else ""
    return Outcome(
        Verdict.BLOCK,
        Reason.OBJECTION,
        f"Tenant {ctx.campaign.tenant!r} holds an objection dated {objected.isoformat()}{what}.",
    )


def _basis(ctx: Context) -> Outcome | None:
    """The legal basis under the regime in force, or None when there is none."""
    consents = ctx.valid_consents
    if consents:
        best = max(consents, key=lambda c: _sort_key(c.start))
        end = f" until {_fmt(best.end, ctx)}" if best.end is not None else ""
        return Outcome(
            Verdict.ALLOW,
            Reason.CONSENT,
            f"consent given {_fmt(best.start, ctx)}{end}{_ref(best.reference)}",
            best.reference or None,
        )
    kind, rel = ctx.relationship
    if kind is None or rel is None or ctx.objection_day is not None:
        return None
    if not ctx.regime.accepts_relationship(ctx.campaign.organisation):
        return None
    if kind is Reason.CUSTOMER:
        text = f"active customer since {_fmt(rel.start, ctx)}{_ref(rel.reference)}"
    else:
        assert rel.end is not None
        until = add_years(ctx.day(rel.end), ctx.regime.former_customer_years)
        text = f"former customer (relationship ended {_fmt(rel.end, ctx)}, counts until {until}){_ref(rel.reference)}"
    return Outcome(Verdict.ALLOW, kind, text, rel.reference or None)


def _no_basis(ctx: Context) -> Outcome | None:
    if ctx.basis is not None:
        return None
    regime = ctx.regime
    found = []
    if ctx.facts_or_empty.consents:
        found.append("no consent covers the call time")
    else:
        found.append("no consent on record")
    kind, rel = ctx.relationship
    if kind is not None and not regime.accepts_relationship(ctx.campaign.organisation):
        found.append(
            f"the {kind.value} relationship does not count for a {ctx.campaign.organisation.value} "
            f"organisation under {regime.name}"
        )
    elif kind is None and rel is not None and rel.end is not None:
        until = add_years(ctx.day(rel.end), regime.former_customer_years)
        found.append(f"the customer relationship ended {_fmt(rel.end, ctx)} (former-customer window ended {until})")
    elif kind is None:
        found.append("no customer relationship")
    return Outcome(
        Verdict.BLOCK,
        Reason.NO_BASIS,
        f"No legal basis under {regime.name} ({regime.summary}): {'; '.join(found)}.",
    )


def _hours_check(ctx: Context) -> tuple[bool, str]:
    return ctx.hours


def _outside_hours(ctx: Context) -> Outcome | None:
    if ctx.call.callback_requested:
        return None
    allowed, description = _hours_check(ctx)
    if allowed:
        return None
    return Outcome(Verdict.BLOCK, Reason.OUTSIDE_HOURS, f"Called person's local time: {description}.")


def _allow(ctx: Context) -> Outcome | None:
    basis = ctx.basis
    assert basis is not None, "rule no-basis runs first"
    if ctx.call.callback_requested:
        hours = "a callback the person requested may be outside the calling hours"
    else:
        hours = _hours_check(ctx)[1]
    return Outcome(
        basis.verdict,
        basis.reason,
        f"Allowed under {ctx.regime.name}: {basis.explanation}; {hours}.",
        basis.basis_reference,
    )


@dataclass(frozen=True, slots=True)
class Rule:
    number: int  # POLICY.md §2
    check: Callable[[Context], Outcome | None]
    needs_facts: bool


RULES: Mapping[str, Rule] = {
    "invalid-number": Rule(3, _invalid_number, needs_facts=False),
    "service-call": Rule(4, _service_call, needs_facts=False),
    "caller-id": Rule(5, _caller_id, needs_facts=False),
    "index-unavailable": Rule(6, _index_unavailable, needs_facts=True),
    "suppressed": Rule(7, _suppressed, needs_facts=True),
    "objection": Rule(9, _objection, needs_facts=True),
    "no-basis": Rule(10, _no_basis, needs_facts=True),
    "outside-hours": Rule(11, _outside_hours, needs_facts=True),
    "basis": Rule(13, _allow, needs_facts=True),
}


# Decisions by this rule or a later one were made after asking the consent index (rule 6: it did not answer).
FIRST_FACT_RULE = min(rule.number for rule in RULES.values() if rule.needs_facts)


def rules_for(jurisdiction: Jurisdiction) -> tuple[Rule, ...]:
    return _rules_for(jurisdiction.rules)


@functools.cache
def _rules_for(names: tuple[str, ...]) -> tuple[Rule, ...]:
    unknown = [n for n in names if n not in RULES]
    if unknown:
        raise KeyError(f"unknown policy rule(s): {', '.join(unknown)}")
    return tuple(RULES[n] for n in names)


# -- the procedure -----------------------------------------------------------------------------------


def _common(call: Call, campaign: Campaign | None, campaign_id: str) -> Decision | None:
    if call.number.kind is NumberKind.EMERGENCY:
        return Decision(
            Verdict.ALLOW,
            Reason.EMERGENCY,
            f"{call.number.masked_input} is on the always-allow list of emergency and short numbers.",
            rule=1,
            regime=campaign.jurisdiction.regime_on(call.at.astimezone(zone(campaign.jurisdiction.timezone)).date()).name
            if campaign is not None
            else None,
        )
    if campaign is None:
        return Decision(
            Verdict.BLOCK,
            Reason.UNKNOWN_CAMPAIGN,
            f"Campaign {campaign_id!r} is not configured; calls for unknown campaigns are blocked.",
            rule=2,
        )
    return None


def _finish(ctx: Context, rule: Rule, outcome: Outcome) -> Decision:
    if outcome.verdict is Verdict.BLOCK and ctx.campaign.mode is Mode.MONITOR:
        return Decision(
            Verdict.ALLOW,
            outcome.reason,
            f"Monitor mode: the call goes through, but enforcement would block it. {outcome.explanation}",
            would_block=True,
            regime=ctx.regime.name,
            basis_reference=outcome.basis_reference,
            rule=rule.number,
        )
    return Decision(
        outcome.verdict,
        outcome.reason,
        outcome.explanation,
        regime=ctx.regime.name,
        basis_reference=outcome.basis_reference,
        rule=rule.number,
    )


class Pending:
    """A decision waiting for the facts: the rules that need the index are still to run."""

    __slots__ = ("_ctx", "_rules")

    def __init__(self, ctx: Context, rules: tuple[Rule, ...]) -> None:
        self._ctx = ctx
        self._rules = rules

    @property
    def tenant(self) -> str:
        return self._ctx.campaign.tenant

    @property
    def e164(self) -> str:
        number = self._ctx.call.number.e164
        assert number is not None, "rule 3 lets only valid numbers through"
        return number

    def decide(self, facts: Facts | None) -> Decision:
        """Finish the decision; `facts` None means the consent index could not answer in time."""
        ctx = self._ctx
        ctx.facts = facts
        for rule in self._rules:
            outcome = rule.check(ctx)
            if outcome is not None:
                return _finish(ctx, rule, outcome)
        raise AssertionError(f"jurisdiction {ctx.jurisdiction.code} has no rule that always decides")


def screen(call: Call, campaign: Campaign | None, campaign_id: str = "") -> Decision | Pending:
    """Run the rules that need no facts (1–5): their decision, or a `Pending` that needs the index."""
    common = _common(call, campaign, campaign_id or (campaign.id if campaign else ""))
    if common is not None:
        return common
    assert campaign is not None
    ctx = Context(call, campaign)
    rules = rules_for(campaign.jurisdiction)
    for i, rule in enumerate(rules):
        if rule.needs_facts:
            return Pending(ctx, rules[i:])
        outcome = rule.check(ctx)
        if outcome is not None:
            return _finish(ctx, rule, outcome)
    raise AssertionError(f"jurisdiction {campaign.jurisdiction.code} has no rule that always decides")


def decide(call: Call, campaign: Campaign | None, facts: Facts | None, campaign_id: str = "") -> Decision:
    """The full decision, a pure function of its inputs. `facts` None: the index could not answer."""
    result = screen(call, campaign, campaign_id)
    return result if isinstance(result, Decision) else result.decide(facts)
