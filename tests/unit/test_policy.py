"""The decision procedure of POLICY.md §2, table by table."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace

import pytest

from gatekeeper.core.jurisdictions import builtin
from gatekeeper.core.model import (
    Call,
    Campaign,
    Consent,
    Decision,
    Facts,
    Mode,
    Objection,
    Organisation,
    Purpose,
    Reason,
    Relationship,
    Suppression,
    Verdict,
)
from gatekeeper.core.numbers import normalise
from gatekeeper.core.policy import Pending, add_years, decide, screen, zone

AMS = zone("Europe/Amsterdam")
NL = builtin("NL")
SALES = Campaign("acme-sales", "acme", NL)
CHARITY = replace(SALES, id="donors", organisation=Organisation.CHARITY)
NUMBER = normalise("0612345678", "NL")
WEEKDAY = "2026-12-01T10:30"  # a Tuesday under nl-2026
OLD_WEEKDAY = "2025-12-02T10:30"  # a Tuesday under nl-2021
d = dt.date


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=AMS)


def run(
    facts: Facts | None = None,
    when: str = WEEKDAY,
    campaign: Campaign | None = SALES,
    number: str = "0612345678",
    caller_id: str | None = None,
    presentation: int | None = None,
    callback: bool = False,
) -> Decision:
    call = Call(normalise(number, "NL"), at(when), caller_id, presentation, callback)
    return decide(call, campaign, Facts() if facts is None else facts, "acme-sales")


CONSENT = Facts(consents=(Consent(d(2025, 1, 1), None, "form-1"),))
CUSTOMER = Facts(relationships=(Relationship(d(2019, 5, 1)),))


# -- rules 1-5: before the index ------------------------------------------------------------------


@pytest.mark.parametrize("digits", ["112", "911", "999", "144"])
def test_emergency_numbers_are_always_allowed(digits: str) -> None:
    decision = run(number=digits, when="2026-12-06T03:00", campaign=None)
    assert (decision.verdict, decision.reason, decision.rule) == (Verdict.ALLOW, Reason.EMERGENCY, 1)


def test_unknown_campaign_blocks() -> None:
    decision = run(CONSENT, campaign=None)
    assert (decision.verdict, decision.reason, decision.rule) == (Verdict.BLOCK, Reason.UNKNOWN_CAMPAIGN, 2)
    assert "acme-sales" in decision.explanation


@pytest.mark.parametrize("digits", ["", "abc", "06-CALL-ME", "06123", "0612345678901234", "+999 123", "0800123"])
def test_invalid_numbers_block(digits: str) -> None:
    decision = run(CONSENT, number=digits)
    assert (decision.verdict, decision.reason, decision.rule) == (Verdict.BLOCK, Reason.INVALID_NUMBER, 3)


def test_service_campaign_is_allowed_without_basis() -> None:
    service = replace(SALES, purpose=Purpose.SERVICE)
    decision = run(Facts(), campaign=service, when="2026-12-06T03:00")
    assert (decision.verdict, decision.reason, decision.rule) == (Verdict.ALLOW, Reason.SERVICE_CALL, 4)


@pytest.mark.parametrize(
    ("caller_id", "presentation", "blocked"),
    [
        ("+31201234567", 0, False),
        ("+31201234567", 1, False),
        ("+31201234567", 3, False),
        ("+31201234567", 0x20, True),  # presentation restricted
        ("+31201234567", 0x23, True),
        ("unknown", 67, True),  # number unavailable, as Asterisk reports for no caller ID
        ("", 0, True),
        ("anonymous", 0, True),
        ("+31201234568", 0, True),  # not in the registered pool
        ("020 123 4567", 0, False),  # national form of a pool number
    ],
)
def test_caller_id_rule(caller_id: str, presentation: int, blocked: bool) -> None:
    campaign = replace(SALES, caller_ids=frozenset({"+31201234567"}))
    decision = run(CONSENT, campaign=campaign, caller_id=caller_id, presentation=presentation)
    if blocked:
        assert (decision.verdict, decision.reason, decision.rule) == (Verdict.BLOCK, Reason.CALLER_ID, 5)
    else:
        assert decision.reason is Reason.CONSENT


def test_caller_id_without_pool_only_needs_a_presented_number() -> None:
    assert run(CONSENT, caller_id="+31301234567", presentation=0).reason is Reason.CONSENT
    assert run(CONSENT, caller_id="+31301234567", presentation=0x20).reason is Reason.CALLER_ID


def test_caller_id_rule_does_not_apply_without_caller_id_information() -> None:
    campaign = replace(SALES, caller_ids=frozenset({"+31201234567"}))
    assert run(CONSENT, campaign=campaign).reason is Reason.CONSENT


def test_screen_decides_rules_one_to_five_without_facts() -> None:
    call = Call(NUMBER, at(WEEKDAY))
    pending = screen(call, SALES)
    assert isinstance(pending, Pending)  # needs the index
    assert (pending.tenant, pending.e164) == ("acme", "+31612345678")
    assert pending.decide(CONSENT).reason is Reason.CONSENT
    assert isinstance(screen(Call(normalise("112", "NL"), at(WEEKDAY)), SALES), Decision)
    assert isinstance(screen(call, None, "nope"), Decision)
    assert isinstance(screen(Call(normalise("xyz", "NL"), at(WEEKDAY)), SALES), Decision)


# -- rule 6: index unavailable -----------------------------------------------------------------------


def test_index_unavailable_fails_closed() -> None:
    call = Call(NUMBER, at(WEEKDAY))
    decision = decide(call, SALES, None)
    assert (decision.verdict, decision.reason, decision.rule) == (Verdict.BLOCK, Reason.INDEX_UNAVAILABLE, 6)


def test_rules_before_the_index_still_decide_when_it_is_unavailable() -> None:
    call = Call(normalise("112", "NL"), at(WEEKDAY))
    assert decide(call, SALES, None).reason is Reason.EMERGENCY


# -- rule 7: suppression -----------------------------------------------------------------------------


def test_suppression_overrides_consent_and_hours() -> None:
    facts = replace(CONSENT, suppressions=(Suppression(d(2025, 10, 1), "complaint"),))
    decision = run(facts, when="2026-12-06T10:30")  # a Sunday too: the first rule that decides wins
    assert (decision.reason, decision.rule) == (Reason.SUPPRESSED, 7)
    assert "complaint" in decision.explanation


def test_suppression_dated_after_the_call_does_not_count() -> None:
    facts = replace(CONSENT, suppressions=(Suppression(d(2027, 1, 1)),))
    assert run(facts).reason is Reason.CONSENT


# -- rule 9: objections ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("consent_start", "objection", "reason"),
    [
        (d(2024, 1, 10), d(2025, 6, 2), Reason.OBJECTION),  # objection after consent
        (d(2025, 6, 2), d(2025, 6, 2), Reason.OBJECTION),  # same day: the objection wins
        (d(2025, 6, 3), d(2025, 6, 2), Reason.CONSENT),  # consent given after the objection is a new opt-in
        (d(2024, 1, 10), d(2027, 1, 1), Reason.CONSENT),  # objection dated after the call is ignored
    ],
)
def test_objection_against_consent(consent_start: dt.date, objection: dt.date, reason: Reason) -> None:
    facts = Facts(consents=(Consent(consent_start),), objections=(Objection(objection),))
    assert run(facts).reason is reason


def test_objection_with_time_and_consent_later_same_day_still_blocks() -> None:
    facts = Facts(
        consents=(Consent(at("2025-06-02T15:00")),),
        objections=(Objection(at("2025-06-02T09:00")),),
    )
    assert run(facts).reason is Reason.OBJECTION


def test_objection_blocks_any_customer_relationship_whatever_the_dates() -> None:
    facts = Facts(relationships=(Relationship(d(2024, 1, 1)),), objections=(Objection(d(2020, 1, 1)),))
    decision = run(facts, when=OLD_WEEKDAY)
    assert (decision.reason, decision.rule) == (Reason.OBJECTION, 9)


def test_the_latest_objection_counts() -> None:
    facts = Facts(
        consents=(Consent(d(2024, 1, 10)),),
        objections=(Objection(d(2023, 1, 1)), Objection(d(2025, 1, 1))),
    )
    assert run(facts).reason is Reason.OBJECTION


def test_any_covering_consent_given_after_the_objection_counts() -> None:
    facts = Facts(
        consents=(Consent(d(2022, 1, 1)), Consent(d(2025, 7, 1), None, "re-opt-in")),
        objections=(Objection(d(2025, 6, 2)),),
    )
    decision = run(facts)
    assert (decision.reason, decision.basis_reference) == (Reason.CONSENT, "re-opt-in")


def test_objection_without_any_basis_reports_objection() -> None:
    assert run(Facts(objections=(Objection(d(2025, 1, 1)),))).reason is Reason.OBJECTION


# -- rule 10: legal basis by regime ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "reason"),
    [
        (d(2025, 1, 1), None, Reason.CONSENT),
        (d(2026, 12, 1), None, Reason.CONSENT),  # starts today: from the beginning of its day
        (d(2026, 12, 2), None, Reason.NO_BASIS),  # future consent
        (d(2025, 1, 1), d(2026, 12, 1), Reason.CONSENT),  # ends today: through the end of its day
        (d(2025, 1, 1), d(2026, 11, 30), Reason.NO_BASIS),  # expired yesterday
    ],
)
def test_consent_covers_whole_days(start: dt.date, end: dt.date | None, reason: Reason) -> None:
    assert run(Facts(consents=(Consent(start, end),))).reason is reason


def test_consent_with_exact_instants() -> None:
    facts = Facts(consents=(Consent(at("2026-12-01T10:00"), at("2026-12-01T11:00")),))
    assert run(facts, when="2026-12-01T10:30").reason is Reason.CONSENT
    assert run(facts, when="2026-12-01T09:59").reason is Reason.NO_BASIS
    assert run(facts, when="2026-12-01T11:01").reason is Reason.NO_BASIS


def test_any_covering_consent_counts() -> None:
    facts = Facts(consents=(Consent(d(2020, 1, 1), d(2021, 1, 1)), Consent(d(2025, 1, 1), None, "b")))
    assert run(facts).basis_reference == "b"


@pytest.mark.parametrize(
    ("organisation", "regime_day", "reason"),
    [
        (Organisation.COMMERCIAL, "2026-06-30T10:30", Reason.CUSTOMER),
        (Organisation.COMMERCIAL, "2026-07-01T10:30", Reason.NO_BASIS),
        (Organisation.CHARITY, "2026-07-01T10:30", Reason.CUSTOMER),
        (Organisation.LOTTERY, "2026-07-01T10:30", Reason.CUSTOMER),
        (Organisation.PUBLISHER, "2026-07-01T10:30", Reason.CUSTOMER),
    ],
)
def test_customer_basis_by_regime_and_organisation(organisation: Organisation, regime_day: str, reason: Reason) -> None:
    decision = run(CUSTOMER, campaign=replace(SALES, organisation=organisation), when=regime_day)
    assert decision.reason is reason


def test_regime_switches_at_midnight_local_time() -> None:
    # 2026-06-30 23:59 Amsterdam is still nl-2021 and 00:00 on 1 July is nl-2026 (both outside hours,
    # so look at the regime the decision names).
    before = run(CUSTOMER, when="2026-06-30T23:59")
    after = run(CUSTOMER, when="2026-07-01T00:00")
    assert (before.regime, after.regime) == ("nl-2021", "nl-2026")
    assert (before.reason, after.reason) == (Reason.OUTSIDE_HOURS, Reason.NO_BASIS)
    utc_edge = dt.datetime(2026, 6, 30, 22, 0, tzinfo=dt.UTC)  # = 1 July 00:00 in Amsterdam (CEST)
    assert decide(Call(NUMBER, utc_edge), SALES, CUSTOMER).regime == "nl-2026"


def test_calls_before_the_calendar_are_decided_under_the_first_regime() -> None:
    assert run(CUSTOMER, when="2019-03-05T10:30").regime == "nl-2021"


@pytest.mark.parametrize(
    ("end", "when", "reason"),
    [
        (d(2023, 12, 1), "2026-12-01T10:30", Reason.FORMER_CUSTOMER),  # exactly 3 years: inclusive
        (d(2023, 11, 30), "2026-12-01T10:30", Reason.NO_BASIS),  # 3 years and a day
        (d(2026, 12, 1), "2026-12-01T10:30", Reason.CUSTOMER),  # ends today: still a customer
        (d(2023, 2, 28), "2026-02-27T10:30", Reason.FORMER_CUSTOMER),
        (d(2024, 2, 29), "2027-02-26T10:30", Reason.FORMER_CUSTOMER),  # 29 Feb + 3 y = 28 Feb
        (d(2024, 2, 29), "2027-03-01T10:30", Reason.NO_BASIS),
    ],
)
def test_former_customer_window(end: dt.date, when: str, reason: Reason) -> None:
    facts = Facts(relationships=(Relationship(d(2015, 1, 1), end),))
    assert run(facts, when=when, campaign=CHARITY).reason is reason


def test_former_customer_counts_for_everyone_under_nl_2021() -> None:
    facts = Facts(relationships=(Relationship(d(2015, 1, 1), d(2024, 1, 1)),))
    assert run(facts, when=OLD_WEEKDAY).reason is Reason.FORMER_CUSTOMER
    assert run(facts, when=WEEKDAY).reason is Reason.NO_BASIS


def test_the_relationship_with_the_latest_end_counts() -> None:
    facts = Facts(
        relationships=(Relationship(d(2010, 1, 1), d(2012, 1, 1)), Relationship(d(2015, 1, 1), d(2025, 1, 1), "r2"))
    )
    decision = run(facts, campaign=CHARITY)
    assert (decision.reason, decision.basis_reference) == (Reason.FORMER_CUSTOMER, "r2")
    active = replace(facts, relationships=(*facts.relationships, Relationship(d(2020, 1, 1))))
    assert run(active, campaign=CHARITY).reason is Reason.CUSTOMER


def test_relationship_starting_after_the_call_does_not_count() -> None:
    assert run(Facts(relationships=(Relationship(d(2027, 1, 1)),)), campaign=CHARITY).reason is Reason.NO_BASIS


def test_consent_is_preferred_over_customer() -> None:
    facts = replace(CUSTOMER, consents=CONSENT.consents)
    assert run(facts, when=OLD_WEEKDAY).reason is Reason.CONSENT


def test_no_basis_explains_what_was_found() -> None:
    decision = run(CUSTOMER)
    assert decision.reason is Reason.NO_BASIS
    assert "nl-2026" in decision.explanation and "commercial" in decision.explanation


# -- rule 11: calling hours ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "allowed"),
    [
        ("2026-12-01T08:59:59", False),
        ("2026-12-01T09:00", True),  # the opening minute is in
        ("2026-12-01T21:59:59", True),
        ("2026-12-01T22:00", False),  # the closing minute is out
        ("2026-12-05T09:30", False),  # Saturday 5 December: Saturday hours
        ("2026-12-05T10:00", True),
        ("2026-12-05T15:59", True),
        ("2026-12-05T16:00", False),
        ("2026-12-06T12:00", False),  # Sunday
        ("2025-12-05T18:29", True),  # Friday 5 December: until 18:30
        ("2025-12-05T18:30", False),
        ("2025-12-24T18:29", True),  # Wednesday 24 December
        ("2025-12-24T18:30", False),
        ("2026-05-04T18:29", True),  # Monday 4 May
        ("2026-05-04T18:30", False),
        ("2027-12-24T18:30", False),  # Friday
        ("2027-05-04T20:00", False),  # Tuesday
        ("2027-05-11T20:00", True),  # an ordinary Tuesday
    ],
)
def test_calling_hour_boundaries(when: str, allowed: bool) -> None:
    decision = run(CONSENT, when=when)
    assert decision.reason is (Reason.CONSENT if allowed else Reason.OUTSIDE_HOURS)


@pytest.mark.parametrize(
    "holiday",
    [
        "2026-01-01",  # New Year's Day
        "2026-04-06",  # Easter Monday
        "2026-04-27",  # King's Day
        "2025-04-26",  # King's Day on Saturday 26 April because 27 April 2025 is a Sunday
        "2026-05-05",  # Liberation Day, every year (not only every fifth)
        "2027-05-05",
        "2026-05-14",  # Ascension Day
        "2026-05-25",  # Whit Monday
        "2026-12-25",  # Christmas Day
        "2026-12-28",  # not a holiday: checked below
    ],
)
def test_public_holidays_are_closed(holiday: str) -> None:
    decision = run(CONSENT, when=f"{holiday}T11:00")
    expected = Reason.CONSENT if holiday == "2026-12-28" else Reason.OUTSIDE_HOURS
    assert decision.reason is expected


def test_boxing_day_and_good_friday() -> None:
    assert run(CONSENT, when="2025-12-26T11:00").reason is Reason.OUTSIDE_HOURS
    assert run(CONSENT, when="2026-04-03T11:00").reason is Reason.CONSENT  # Good Friday is not a holiday


def test_hours_use_the_called_persons_time_zone() -> None:
    # A +1 New York number called at 15:30 Amsterdam time is 09:30 there: allowed; at 14:30 it is 08:30.
    assert run(CONSENT, number="+12125550100", when="2026-12-01T15:30").reason is Reason.CONSENT
    assert run(CONSENT, number="+12125550100", when="2026-12-01T14:30").reason is Reason.OUTSIDE_HOURS


def test_requested_callback_may_be_outside_hours() -> None:
    assert run(CONSENT, when="2026-12-01T22:30", callback=True).reason is Reason.CONSENT


def test_hours_come_after_basis_and_objection() -> None:
    assert run(Facts(), when="2026-12-06T12:00").reason is Reason.NO_BASIS


# -- monitor mode ------------------------------------------------------------------------------------


def test_monitor_mode_allows_and_keeps_the_reason() -> None:
    shadow = replace(SALES, mode=Mode.MONITOR)
    decision = run(Facts(), campaign=shadow)
    assert (decision.verdict, decision.reason, decision.would_block) == (Verdict.ALLOW, Reason.NO_BASIS, True)
    allowed = run(CONSENT, campaign=shadow)
    assert (allowed.verdict, allowed.would_block) == (Verdict.ALLOW, False)


def test_monitor_mode_also_covers_fail_closed_outcomes() -> None:
    shadow = replace(SALES, mode=Mode.MONITOR)
    decision = decide(Call(NUMBER, at(WEEKDAY)), shadow, None)
    assert (decision.verdict, decision.reason, decision.would_block) == (
        Verdict.ALLOW,
        Reason.INDEX_UNAVAILABLE,
        True,
    )


# -- properties of every decision --------------------------------------------------------------------


@pytest.mark.parametrize(
    "facts",
    [Facts(), CONSENT, CUSTOMER, Facts(objections=(Objection(d(2025, 1, 1)),)), None],
)
@pytest.mark.parametrize("when", [WEEKDAY, "2026-12-06T10:00", "2026-06-30T10:00"])
def test_every_decision_has_an_explanation_without_the_number(facts: Facts | None, when: str) -> None:
    decision = decide(Call(NUMBER, at(when)), SALES, facts)
    assert decision.explanation
    assert "612345678" not in decision.explanation
    assert decision.regime in ("nl-2021", "nl-2026")
    assert decision.would_block is False


def test_add_years() -> None:
    assert add_years(d(2024, 2, 29), 3) == d(2027, 2, 28)
    assert add_years(d(2024, 2, 29), 4) == d(2028, 2, 29)
    assert add_years(d(2023, 12, 1), 3) == d(2026, 12, 1)


# -- explanations: every time in the campaign's zone, with its offset -------------------------------------

UTC = dt.UTC
UTC_EVENING = dt.datetime(2026, 11, 30, 23, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("facts", "when", "expected"),
    [
        # consent given at 23:32:32 UTC on 2 December = 00:32:32 on 3 December in Amsterdam (CET, +01:00)
        (Facts(consents=(Consent(dt.datetime(2026, 12, 2, 23, 32, 32, tzinfo=UTC), None, "web"),)), "2026-12-03T10:30",
         "consent given 2026-12-03 00:32:32 CET (+01:00) (ref web)"),
        (Facts(consents=(Consent(dt.datetime(2026, 12, 2, 8, 0, tzinfo=UTC),
                                 dt.datetime(2027, 7, 1, 9, 15, tzinfo=UTC)),)), "2026-12-03T10:30",
         "consent given 2026-12-02 09:00:00 CET (+01:00) until 2027-07-01 11:15:00 CEST (+02:00)"),
        (Facts(relationships=(Relationship(d(2019, 1, 1), dt.datetime(2023, 6, 30, 22, 0, tzinfo=UTC)),)), WEEKDAY,
         "the customer relationship ended 2023-07-01 00:00:00 CEST (+02:00) (former-customer window ended 2026-07-01)"),
        (Facts(suppressions=(Suppression(dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC), "erasure"),)), WEEKDAY,
         "suppression list since 2026-03-29 03:00:00 CEST (+02:00) (ref erasure)"),
        # an objection at 23:05 UTC on 30 November is dated 1 December in Amsterdam; days stay dates
        (Facts(consents=(Consent(d(2025, 1, 1)),), objections=(Objection(UTC_EVENING),)), WEEKDAY,
         "objection dated 2026-12-01; it overrides the consent of 2025-01-01"),
    ],
)  # fmt: skip
def test_explanations_show_fact_times_in_the_campaigns_zone(facts: Facts, when: str, expected: str) -> None:
    decision = run(facts, when=when)
    assert expected in decision.explanation, decision.explanation
    assert "+00:00" not in decision.explanation and not re.search(r"\dT\d", decision.explanation)


def test_explanations_show_the_call_time_with_its_offset() -> None:
    summer = run(CONSENT, when="2026-07-01T10:30")  # a Wednesday
    assert "Wednesday 2026-07-01 10:30 CEST (+02:00) is within the calling hours" in summer.explanation
    night = run(CONSENT, when="2026-12-01T23:15")
    assert "Tuesday 2026-12-01 23:15 CET (+01:00) is outside the calling hours" in night.explanation
