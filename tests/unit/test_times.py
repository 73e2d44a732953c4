"""How times are shown to people (`gatekeeper.core.times`): one zone, its abbreviation and its offset."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from zoneinfo import ZoneInfo

import pytest

from gatekeeper.core.jurisdictions import builtin
from gatekeeper.core.model import Campaign
from gatekeeper.core.times import Zones, iso, offset, shown

AMS = ZoneInfo("Europe/Amsterdam")
UTC = dt.UTC


@pytest.mark.parametrize(
    ("moment", "zone", "expected"),
    [
        (dt.datetime(2026, 12, 2, 23, 32, 32, tzinfo=UTC), AMS, "2026-12-03 00:32:32 CET (+01:00)"),
        (dt.datetime(2026, 7, 1, 8, 0, tzinfo=UTC), AMS, "2026-07-01 10:00:00 CEST (+02:00)"),
        (dt.datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC), AMS, "2026-03-29 01:59:59 CET (+01:00)"),  # DST starts
        (dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC), AMS, "2026-03-29 03:00:00 CEST (+02:00)"),
        (dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC), AMS, "2026-10-25 02:30:00 CEST (+02:00)"),  # twice that day
        (dt.datetime(2026, 10, 25, 1, 30, tzinfo=UTC), AMS, "2026-10-25 02:30:00 CET (+01:00)"),
        (dt.datetime(2026, 12, 3, 0, 32, 32, tzinfo=AMS), ZoneInfo("UTC"), "2026-12-02 23:32:32 UTC (+00:00)"),
        (dt.datetime(2026, 12, 2, 23, 0, tzinfo=UTC), ZoneInfo("Asia/Dubai"), "2026-12-03 03:00:00 +04:00"),
        (dt.datetime(2026, 12, 2, 23, 0, tzinfo=UTC), ZoneInfo("America/St_Johns"), "2026-12-02 19:30:00 NST (-03:30)"),
        (dt.date(2026, 12, 2), AMS, "2026-12-02"),  # a whole day in the campaign's zone stays a date
    ],
)  # fmt: skip
def test_a_time_is_shown_in_the_zone_with_its_offset(moment: dt.date, zone: ZoneInfo, expected: str) -> None:
    assert shown(moment, zone) == expected


def test_minutes_only_and_files() -> None:
    moment = dt.datetime(2026, 12, 2, 23, 32, 32, 120000, tzinfo=UTC)
    assert shown(moment, AMS, seconds=False) == "2026-12-03 00:32 CET (+01:00)"
    assert iso(moment, AMS) == "2026-12-03T00:32:32.120000+01:00"
    assert iso(moment.replace(microsecond=0), AMS) == "2026-12-03T00:32:32+01:00"
    assert dt.datetime.fromisoformat(iso(moment, AMS)) == moment  # the same instant
    assert iso(dt.date(2026, 12, 2), AMS) == "2026-12-02"
    assert offset(dt.datetime(2026, 1, 1, tzinfo=ZoneInfo("America/St_Johns"))) == "-03:30"


def test_a_naive_time_is_refused() -> None:
    for show in (shown, iso):
        with pytest.raises(ValueError, match="time zone"):
            show(dt.datetime(2026, 12, 2, 10, 30), AMS)


def test_zones_of_campaigns_and_tenants() -> None:
    nl = builtin("NL")
    lisbon = replace(nl, code="PT", timezone="Europe/Lisbon")
    campaigns = {
        "acme-sales": Campaign("acme-sales", "acme", nl),
        "acme-pt": Campaign("acme-pt", "acme", lisbon),  # acme calls in two zones
        "donors": Campaign("donors", "goededoel", nl),
        "porto": Campaign("porto", "vinho", lisbon),
    }
    zones = Zones(campaigns, ZoneInfo("UTC"))
    assert zones.of_campaign("acme-pt") == ZoneInfo("Europe/Lisbon")
    assert zones.of_campaign("donors") == AMS
    assert zones.of_campaign("unknown") == zones.of_campaign(None) == ZoneInfo("UTC")
    assert zones.of_tenant("goededoel") == AMS and zones.of_tenant("vinho") == ZoneInfo("Europe/Lisbon")
    assert zones.of_tenant("acme") == zones.of_tenant(None) == ZoneInfo("UTC")  # no single zone: the default
