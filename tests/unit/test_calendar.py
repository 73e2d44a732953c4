from __future__ import annotations

import datetime as dt

import pytest

from gatekeeper.core.calendar import parse_window
from gatekeeper.core.jurisdictions import NL_HOLIDAYS

d = dt.date


@pytest.mark.parametrize(
    ("year", "expected"),
    [
        (2025, {d(2025, 1, 1), d(2025, 4, 21), d(2025, 4, 26), d(2025, 5, 5), d(2025, 5, 29), d(2025, 6, 9),
                d(2025, 12, 25), d(2025, 12, 26)}),
        (2026, {d(2026, 1, 1), d(2026, 4, 6), d(2026, 4, 27), d(2026, 5, 5), d(2026, 5, 14), d(2026, 5, 25),
                d(2026, 12, 25), d(2026, 12, 26)}),
        (2027, {d(2027, 1, 1), d(2027, 3, 29), d(2027, 4, 27), d(2027, 5, 5), d(2027, 5, 6), d(2027, 5, 17),
                d(2027, 12, 25), d(2027, 12, 26)}),
    ],
)  # fmt: skip
def test_dutch_holidays_match_the_policy_list(year: int, expected: set[dt.date]) -> None:
    assert set(NL_HOLIDAYS.in_year(year)) == expected


def test_good_friday_is_not_a_holiday_and_liberation_day_is_every_year() -> None:
    assert NL_HOLIDAYS.holiday(d(2026, 4, 3)) is None
    assert all(NL_HOLIDAYS.holiday(d(y, 5, 5)) == "Liberation Day" for y in range(2021, 2035))


def test_kings_day_moves_to_saturday_only_when_27_april_is_a_sunday() -> None:
    for year in range(2020, 2040):
        k27 = d(year, 4, 27)
        expected = d(year, 4, 26) if k27.weekday() == 6 else k27
        assert NL_HOLIDAYS.holiday(expected) == "King's Day", year


def test_window_parsing() -> None:
    assert [str(w) for w in parse_window("10:00-13:00, 14:00-20:00")] == ["10:00–13:00", "14:00–20:00"]
    assert parse_window("closed") == ()
    with pytest.raises(ValueError, match="closes before"):
        parse_window("22:00-09:00")
    with pytest.raises(ValueError, match="not a window"):
        parse_window("9 to 5")
