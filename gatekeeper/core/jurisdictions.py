"""Jurisdictions as data: regime calendars, accepted bases, calling hours and holidays.

A jurisdiction is added by writing its data here (and, where it needs one, a small rule function in
`policy`), not by editing the decision procedure. Every value can be overridden in configuration.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

from gatekeeper.core.calendar import CallingHours, EasterHoliday, FixedHoliday, HolidayCalendar, parse_window
from gatekeeper.core.model import Jurisdiction, Organisation, Regime

ALL_ORGANISATIONS = frozenset(Organisation)


NL_HOLIDAYS = HolidayCalendar(
    rules=(
        FixedHoliday("New Year's Day", 1, 1),
        EasterHoliday("Easter Monday", 1),
        FixedHoliday("King's Day", 4, 27, if_weekday=6, shift=-1),
        FixedHoliday("Liberation Day", 5, 5),
        EasterHoliday("Ascension Day", 39),
        EasterHoliday("Whit Monday", 50),
        FixedHoliday("Christmas Day", 12, 25),
        FixedHoliday("Boxing Day", 12, 26),
    )
)

NL_2021 = Regime(
    "nl-2021",
    relationship_organisations=ALL_ORGANISATIONS,
    summary="consent, a customer relationship, or a former customer relationship of up to 3 years",
)
NL_2026 = Regime(
    "nl-2026",
    relationship_organisations=frozenset({Organisation.CHARITY, Organisation.LOTTERY, Organisation.PUBLISHER}),
    summary="consent; charities, charity lotteries and publishers may also rely on (former) customers",
)

# The rules of POLICY.md §2 that follow the common ones (emergency, unknown campaign), in order.
# Registry lists (rule 8) and attempt limits (rule 12) join jurisdictions that use them.
STANDARD_RULES = (
    "invalid-number",
    "service-call",
    "caller-id",
    "index-unavailable",
    "suppressed",
    "objection",
    "no-basis",
    "outside-hours",
    "basis",
)


def _netherlands() -> Jurisdiction:
    return Jurisdiction(
        code="NL",
        timezone="Europe/Amsterdam",
        regimes=((dt.date(2021, 7, 1), NL_2021), (dt.date(2026, 7, 1), NL_2026)),
        hours=CallingHours(
            weekly=(
                *(parse_window("09:00-22:00"),) * 5,
                parse_window("10:00-16:00"),
                parse_window("closed"),
            ),
            holidays=NL_HOLIDAYS,
            short_days=frozenset({(12, 5), (12, 24), (5, 4)}),
            short_close=dt.time(18, 30),
        ),
        rules=STANDARD_RULES,
    )


BUILTIN: Mapping[str, Callable[[], Jurisdiction]] = {"NL": _netherlands}
KNOWN_REGIMES: Mapping[str, Regime] = {r.name: r for r in (NL_2021, NL_2026)}


def builtin(code: str) -> Jurisdiction:
    try:
        return BUILTIN[code]()
    except KeyError:
        raise KeyError(f"unknown jurisdiction {code!r} (known: {', '.join(sorted(BUILTIN))})") from None
