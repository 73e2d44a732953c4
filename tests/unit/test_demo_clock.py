"""The demo's clock: the real time within the calling hours, otherwise the next calling morning."""

from __future__ import annotations

import datetime as dt

import pytest

from gatekeeper.core.jurisdictions import builtin
from gatekeeper.demo import AMSTERDAM, DemoClock, demo_clock

HOURS = builtin("NL").hours


def local(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=AMSTERDAM)


@pytest.mark.parametrize(
    "now",
    [
        "2026-12-01T10:00",  # Tuesday morning
        "2026-12-05T11:00",  # Saturday within 10:00-16:00
        "2026-12-01T21:40",  # 20 minutes before closing: the demo's calls still fit
    ],
)
def test_within_the_calling_hours_the_demo_uses_the_real_time(now: str) -> None:
    clock = demo_clock(HOURS, local(now))
    assert clock.start == local(now)
    assert clock.note.startswith("Calls are decided now (")


@pytest.mark.parametrize(
    ("now", "start"),
    [
        ("2026-12-01T07:00", "2026-12-01T10:30"),  # Tuesday before opening: the same morning
        ("2026-12-01T21:50", "2026-12-02T10:30"),  # closing in 10 minutes: too close for the demo's calls
        ("2026-12-01T23:30", "2026-12-02T10:30"),  # Tuesday night
        ("2026-12-06T03:00", "2026-12-07T10:30"),  # Sunday night: Monday
        ("2026-12-05T17:00", "2026-12-07T10:30"),  # Saturday after 16:00: not the closed Sunday
        ("2026-12-24T23:00", "2026-12-28T10:30"),  # Christmas Eve: not Christmas, not Saturday, not Sunday
        ("2026-04-05T12:00", "2026-04-07T10:30"),  # Easter Sunday: not Easter Monday
    ],
)
def test_outside_the_calling_hours_the_demo_starts_at_the_next_calling_morning(now: str, start: str) -> None:
    clock = demo_clock(HOURS, local(now))
    assert clock.start == local(start)
    assert HOURS.check(clock.start).allowed
    assert f"as if it were {local(start):%a %d %b %H:%M}" in clock.note


def test_the_demo_clock_runs_from_its_start_in_utc() -> None:
    clock = DemoClock(local("2026-12-07T10:30"), "test")
    first, second = clock.now(), clock.now()
    assert first.tzinfo is dt.UTC
    assert local("2026-12-07T10:30") <= first <= second < local("2026-12-07T10:31")
