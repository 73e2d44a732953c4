"""Public holidays and calling hours, as data.

A holiday calendar is a list of rules (fixed dates, dates relative to Easter, fixed dates that move when
they fall on a given weekday) plus explicit extra and excluded dates, so a jurisdiction's list can be
written down and checked rule by rule, and a compliance officer can change it in configuration.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from dateutil.easter import easter

from gatekeeper.core.times import shown

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True, slots=True)
class FixedHoliday:
    """A holiday on the same day every year; `if_weekday`/`shift` move it (King's Day: Sunday -> -1)."""

    name: str
    month: int
    day: int
    if_weekday: int | None = None
    shift: int = 0

    def date_in(self, year: int) -> dt.date | None:
        try:
            day = dt.date(year, self.month, self.day)
        except ValueError:
            return None
        if self.if_weekday is not None and day.weekday() == self.if_weekday:
            day += dt.timedelta(days=self.shift)
        return day


@dataclass(frozen=True, slots=True)
class EasterHoliday:
    """A holiday a fixed number of days after Western Easter Sunday (Easter Monday: 1)."""

    name: str
    offset: int

    def date_in(self, year: int) -> dt.date | None:
        return easter(year) + dt.timedelta(days=self.offset)


HolidayRule = FixedHoliday | EasterHoliday


@dataclass(frozen=True, slots=True, eq=False)
class HolidayCalendar:
    """Compared and hashed by identity: it keys per-year caches and is built once from configuration."""

    rules: tuple[HolidayRule, ...] = ()
    extra: Mapping[dt.date, str] = field(default_factory=dict)
    excluded: frozenset[dt.date] = frozenset()

    def holiday(self, day: dt.date) -> str | None:
        """The holiday's name on `day`, or None."""
        return _holidays_in(self, day.year).get(day)

    def in_year(self, year: int) -> Mapping[dt.date, str]:
        return _holidays_in(self, year)


@functools.lru_cache(maxsize=256)
def _holidays_in(calendar: HolidayCalendar, year: int) -> Mapping[dt.date, str]:
    days: dict[dt.date, str] = {}
    for rule in calendar.rules:
        day = rule.date_in(year)
        if day is not None:
            days.setdefault(day, rule.name)
    for day, name in calendar.extra.items():
        if day.year == year:
            days[day] = name
    for day in calendar.excluded:
        days.pop(day, None)
    return days


@dataclass(frozen=True, slots=True)
class Window:
    """A calling window on one day: opens ≤ t < closes (the opening minute in, the closing minute out)."""

    opens: dt.time
    closes: dt.time

    def contains(self, t: dt.time) -> bool:
        return self.opens <= t < self.closes

    def __str__(self) -> str:
        return f"{self.opens:%H:%M}–{self.closes:%H:%M}"


@dataclass(frozen=True, slots=True)
class HoursVerdict:
    allowed: bool
    description: str  # "Saturday 2026-12-05 16:05 CET (+01:00) is outside the calling hours (Saturday 10:00–16:00)"


@dataclass(frozen=True, slots=True, eq=False)
class CallingHours:
    """Weekly windows (Monday first; an empty tuple is a closed day), closed holidays and short days.

    `short_days` are (month, day) pairs on which, when they are workdays (Monday–Friday), calls end at
    `short_close` (NL: 5 December, 24 December and 4 May until 18:30). Compared and hashed by identity.
    """

    weekly: tuple[tuple[Window, ...], ...]
    holidays: HolidayCalendar = field(default_factory=HolidayCalendar)
    short_days: frozenset[tuple[int, int]] = frozenset()
    short_close: dt.time | None = None
    # Every bound on a whole minute (as configuration writes them): the verdict is the same for a whole
    # minute, so calls are checked (and cached) per minute instead of per microsecond.
    whole_minutes: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        bounds = [t for day in self.weekly for w in day for t in (w.opens, w.closes)]
        if self.short_close is not None:
            bounds.append(self.short_close)
        object.__setattr__(self, "whole_minutes", all(t.second == 0 and t.microsecond == 0 for t in bounds))

    def windows_on(self, day: dt.date) -> tuple[tuple[Window, ...], str]:
        """The windows that apply on `day` and the name of the day's rule."""
        weekday = day.weekday()
        name = self.holidays.holiday(day)
        if name is not None:
            return (), name
        windows = self.weekly[weekday]
        if self.short_close is not None and weekday < 5 and (day.month, day.day) in self.short_days:
            short = tuple(
                Window(w.opens, min(w.closes, self.short_close)) for w in windows if w.opens < self.short_close
            )
            return short, f"{WEEKDAY_NAMES[weekday]} {day:%-d %B} (short day)"
        return windows, WEEKDAY_NAMES[weekday]

    def check(self, local: dt.datetime) -> HoursVerdict:
        """Whether `local` (the called person's local time) is within the calling hours, and why."""
        if self.whole_minutes:
            local = local.replace(second=0, microsecond=0)
        return _check(self, local)


@functools.lru_cache(maxsize=4096)
def _check(hours: CallingHours, local: dt.datetime) -> HoursVerdict:
    windows, rule = hours.windows_on(local.date())
    t = local.time().replace(tzinfo=None)
    assert local.tzinfo is not None, "the called person's local time"
    when = f"{WEEKDAY_NAMES[local.weekday()]} {shown(local, local.tzinfo, seconds=False)}"
    if not windows:
        return HoursVerdict(False, f"{when}: no calls on {rule}")
    allowed = ", ".join(str(w) for w in windows)
    if any(w.contains(t) for w in windows):
        return HoursVerdict(True, f"{when} is within the calling hours ({rule} {allowed})")
    return HoursVerdict(False, f"{when} is outside the calling hours ({rule} {allowed})")


WINDOW_FORM = 'HH:MM-HH:MM, e.g. "09:00-22:00" (several: "10:00-13:00, 14:00-20:00"; none: "closed")'
_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})")


def parse_clock(text: str) -> dt.time:
    """`"18:30"` (or `"9:00"`) to a time of day; ValueError naming the form HH:MM if it is anything else."""
    match = _CLOCK.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text.strip()!r} is not a time of day of the form HH:MM, e.g. 18:30")
    hour, minute = int(match[1]), int(match[2])
    if hour > 23 or minute > 59:
        raise ValueError(f"{text.strip()!r} is not a time of day (hours 00-23, minutes 00-59)")
    return dt.time(hour, minute)


def parse_window(text: str) -> tuple[Window, ...]:
    """`"09:00-22:00"`, `"10:00-13:00, 14:00-20:00"` or `"closed"` to windows; ValueError if malformed."""
    text = text.strip()
    if text.lower() == "closed" or not text:
        return ()
    windows = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise ValueError(f"{text!r} has an empty window (a comma too many?)")
        opens, sep, closes = part.replace("–", "-").partition("-")
        if not sep or not _CLOCK.fullmatch(opens.strip()) or not _CLOCK.fullmatch(closes.strip()):
            raise ValueError(f"{part!r} is not a window of the form {WINDOW_FORM}")
        try:
            start, end = parse_clock(opens), parse_clock(closes)
        except ValueError as exc:
            raise ValueError(f"{part!r}: {exc}") from None
        if end <= start:
            raise ValueError(f"{part!r} closes before it opens")
        windows.append(Window(start, end))
    return tuple(windows)
