"""`gatekeeper demo` (`make run`): a private Redis if none is reachable, sample data, explained decisions."""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gatekeeper.config import Settings, load
from gatekeeper.core.policy import zone
from gatekeeper.devservers import PrivateRedis, redis_reachable
from gatekeeper.gate import CallRequest, Gate, GateDecision
from gatekeeper.index.loader import Loader
from gatekeeper.index.store import ConsentIndex

AMSTERDAM = zone("Europe/Amsterdam")
DEMO_PEPPER = "demo-pepper-not-secret-0123456789"  # the demo's data is public; a deployment keeps its own
DEMO_CONFIG = """\
# Written by `gatekeeper demo`. A real deployment keeps its pepper secret and stable.
[index]
redis_url = "{redis_url}"
pepper = "{pepper}"
prefix = "gkdemo"

[campaigns.acme-sales]
tenant = "acme"
purpose = "telemarketing"
organisation = "commercial"
jurisdiction = "NL"
mode = "enforce"
caller_ids = ["+31201234567"]

[campaigns.acme-shadow]
tenant = "acme"
organisation = "commercial"
mode = "monitor"

[campaigns.goededoel-donors]
tenant = "goededoel"
organisation = "charity"

[campaigns.acme-service]
tenant = "acme"
purpose = "service"
"""


@dataclass(frozen=True, slots=True)
class Scenario:
    title: str
    number: str
    campaign: str
    at: dt.datetime
    caller_id: str | None = "+31201234567"
    presentation: int | None = 0


def _at(day: str, clock: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=AMSTERDAM)


TUESDAY = "2026-12-01"
SCENARIOS = (
    Scenario("consent on record", "06 1234 5678", "acme-sales", _at(TUESDAY, "10:30")),
    Scenario("active customer, commercial, after 1 July 2026", "0612345679", "acme-sales", _at(TUESDAY, "10:30")),
    Scenario("same customer on 30 June 2026 (old regime)", "0612345679", "acme-sales", _at("2026-06-30", "10:30")),
    Scenario("objection after the consent", "+31612345680", "acme-sales", _at(TUESDAY, "10:30")),
    Scenario("former donor of a charity (2 years ago)", "0612345681", "goededoel-donors", _at(TUESDAY, "10:30")),
    Scenario("consent expired", "0612345682", "acme-sales", _at(TUESDAY, "10:30")),
    Scenario("consent, but Saturday 16:00", "0612345683", "acme-sales", _at("2026-12-05", "16:00")),
    Scenario("consent, 5 December (weekday) 19:00", "0612345683", "acme-sales", _at("2025-12-05", "19:00")),
    Scenario("globally suppressed (complaint)", "0612345690", "acme-sales", _at(TUESDAY, "10:30")),
    Scenario("withheld caller ID", "0612345678", "acme-sales", _at(TUESDAY, "10:30"), "anonymous", 0x20),
    Scenario("monitor mode", "0612345679", "acme-shadow", _at(TUESDAY, "10:30")),
    Scenario("service call (no consent needed)", "0612345699", "acme-service", _at(TUESDAY, "10:30")),
    Scenario("emergency number", "112", "acme-sales", _at("2026-12-06", "03:00")),
    Scenario("not a number", "06-CALL-ME", "acme-sales", _at(TUESDAY, "10:30")),
    Scenario("unknown campaign", "0612345678", "spam-blast", _at(TUESDAY, "10:30")),
)


def _line(s: Scenario, r: GateDecision) -> str:
    d = r.decision
    verdict = "ALLOW*" if d.would_block else d.verdict.value.upper()
    return (
        f"{verdict:<8}{d.reason.value:<18}{r.masked_number:<17}{s.campaign:<18}{r.at:%a %d %b %Y %H:%M}  {s.title}\n"
        f"{'':8}{d.explanation}\n"
    )


async def _reset(index: ConsentIndex) -> None:
    """Start from the sample data alone: drop what an earlier demo run left under the demo prefix."""
    keys = [k async for k in index.client.scan_iter(match=f"{index.keys.prefix}:*", count=1000)]
    for start in range(0, len(keys), 1000):
        await index.client.unlink(*keys[start : start + 1000])


def _next_workday_morning(now: dt.datetime) -> dt.datetime:
    day = now.date() + dt.timedelta(days=1)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(10, 30), tzinfo=AMSTERDAM)


async def _ensure_redis(stack: AsyncExitStack, url: str | None) -> str:
    if url:
        return url
    shared = os.environ.get("GATEKEEPER_REDIS_URL", "redis://127.0.0.1:6379/0")
    if redis_reachable(shared):
        print(f"using the Redis at {shared} (demo keys under the prefix 'gkdemo')")
        return shared
    private = await stack.enter_async_context(PrivateRedis())
    print(f"no Redis at {shared}: started a private redis-server at {private.url}")
    return private.url


async def run_demo(redis_url: str | None = None, *, out: object = None) -> int:
    async with AsyncExitStack() as stack:
        url = await _ensure_redis(stack, redis_url)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gatekeeper-demo-")))
        config_path = workdir / "gatekeeper.toml"
        config_path.write_text(DEMO_CONFIG.format(redis_url=url, pepper=DEMO_PEPPER))
        settings: Settings = load(config_path, env={})
        index = ConsentIndex.from_settings(settings.index)
        stack.push_async_callback(index.close)
        await _reset(index)
        sample = resources.files("gatekeeper.demo") / "consents.csv"
        with resources.as_file(sample) as path:
            report = await Loader(index).load(path, region="NL", replace=True)
        tenants = ", ".join(f"{t} (generation {r.generation})" for t, r in sorted(report.tenants.items()))
        print(f"loaded {report.accepted} sample records for {tenants} from consents.csv\n")
        gate = Gate(settings, index)
        print(f"{'VERDICT':<8}{'REASON':<18}{'NUMBER':<17}{'CAMPAIGN':<18}{'CALL TIME (Amsterdam)':<24}SCENARIO")
        for s in SCENARIOS:
            request = CallRequest(s.number, s.campaign, s.caller_id, s.presentation, s.at, source="demo")
            sys.stdout.write(_line(s, await gate.check(request)))
        print("\nAn objection registered now takes effect for the very next call:")
        first = SCENARIOS[0]
        now = dt.datetime.now(AMSTERDAM)
        await index.object("acme", "+31612345678", now, "demo")
        next_call = _next_workday_morning(now)
        request = CallRequest(first.number, first.campaign, first.caller_id, 0, next_call)
        sys.stdout.write(
            _line(
                Scenario("the same number, after an objection", "", first.campaign, next_call),
                await gate.check(request),
            )
        )
        print("\n(ALLOW* = monitor mode: allowed, but enforcement would block.)")
    return 0
