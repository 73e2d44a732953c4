"""How times are shown to people: in one time zone, with the zone's abbreviation and UTC offset.

Every time a person reads (a decision's explanation, the UI's pages, the CLI's output, CSV exports) goes
through `shown` or `iso`, in the zone of the campaign it belongs to (`Zones`), so nobody has to guess
whether `10:30` means UTC or Amsterdam. A fact's whole day (a `date`) is a day in the campaign's zone and
is shown as a date. Machine-readable JSON keeps UTC (`…Z`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:  # model imports calendar, which shows times with this module
    from gatekeeper.core.model import Campaign

UTC = ZoneInfo("UTC")


def offset(local: dt.datetime) -> str:
    """The UTC offset of an aware datetime as `+01:00` (`-03:30`, `+00:00`)."""
    delta = local.utcoffset()
    if delta is None:
        raise ValueError("a time to show needs a time zone")
    minutes = round(delta.total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{rest:02d}"


def shown(moment: dt.date | dt.datetime, tz: dt.tzinfo, *, seconds: bool = True) -> str:
    """A time for people: `2026-12-03 00:32:32 CET (+01:00)` in `tz`; a date stays `2026-12-03`.

    Zones without a letter abbreviation show the offset alone (`2026-12-03 02:32:32 +03:00`).
    """
    if not isinstance(moment, dt.datetime):
        return moment.isoformat()
    if moment.tzinfo is None:
        raise ValueError("a time to show needs a time zone")
    local = moment.astimezone(tz)
    text = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    name = local.tzname() or ""
    if not name or name[0] in "+-":
        return f"{text} {offset(local)}"
    return f"{text} {name} ({offset(local)})"


def iso(moment: dt.date | dt.datetime, tz: dt.tzinfo) -> str:
    """A time for files (CSV): ISO 8601 in `tz` with its offset (`2026-12-03T00:32:32.120000+01:00`)."""
    if not isinstance(moment, dt.datetime):
        return moment.isoformat()
    if moment.tzinfo is None:
        raise ValueError("a time to show needs a time zone")
    return moment.astimezone(tz).isoformat(timespec="microseconds" if moment.microsecond else "seconds")


class Zones:
    """Which zone a time is shown in: its campaign's (the jurisdiction's), else the deployment's `default`.

    A tenant's facts are shown in its campaigns' zone when they share one, else in the default zone.
    """

    def __init__(self, campaigns: Mapping[str, Campaign], default: ZoneInfo) -> None:
        self.default = default
        self._campaigns = {cid: ZoneInfo(c.jurisdiction.timezone) for cid, c in campaigns.items()}
        names: dict[str, set[str]] = {}
        for c in campaigns.values():
            names.setdefault(c.tenant, set()).add(c.jurisdiction.timezone)
        self._tenants = {tenant: ZoneInfo(zone) for tenant, (zone, *more) in names.items() if not more}

    def of_campaign(self, campaign: str | None) -> ZoneInfo:
        return self._campaigns.get(campaign or "", self.default)

    def of_tenant(self, tenant: str | None) -> ZoneInfo:
        return self._tenants.get(tenant or "", self.default)
