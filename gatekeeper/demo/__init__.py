"""`gatekeeper demo` (`make run`): a private Redis if none is reachable, sample data, explained decisions."""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gatekeeper.compose import build_service, dry_gate
from gatekeeper.config import Settings, load
from gatekeeper.contract import Source
from gatekeeper.core.numbers import normalise
from gatekeeper.core.policy import zone
from gatekeeper.devservers import PrivateRedis, free_port, redis_reachable
from gatekeeper.gate import CallRequest
from gatekeeper.index.loader import Loader
from gatekeeper.index.store import ConsentIndex
from gatekeeper.record import DecisionRecord
from gatekeeper.simulator.fastagi import SimChannel, run_session
from gatekeeper.web import WEB_KEY
from gatekeeper.web.auth import Principal, Role, new_token, with_token

AMSTERDAM = zone("Europe/Amsterdam")
DEMO_PEPPER = "demo-pepper-not-secret-0123456789"  # the demo's data is public; a deployment keeps its own
DEMO_CONFIG = """\
# Written by `gatekeeper demo`. A real deployment keeps its pepper secret and stable.
[index]
redis_url = "{redis_url}"
pepper = "{pepper}"
prefix = "gkdemo"

[fastagi]
listen = "127.0.0.1:{agi_port}"

[http]
listen = "127.0.0.1:{http_port}"

[log]
dsn = "sqlite:///{workdir}/decisions.db"
instance = "demo"

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


def _line(s: Scenario, r: DecisionRecord) -> str:
    verdict = "ALLOW*" if r.would_block else r.verdict.value.upper()
    at = r.at.astimezone(AMSTERDAM)
    return (
        f"{verdict:<8}{r.reason.value:<18}{r.number_masked:<17}{s.campaign:<18}{at:%a %d %b %Y %H:%M}  {s.title}\n"
        f"{'':8}{r.explanation}\n"
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


@dataclass(frozen=True, slots=True)
class LiveCall:
    title: str
    number: str
    campaign: str | None  # None: not in the URL; the simulated channel carries GATEKEEPER_CAMPAIGN
    callingpres: int = 0
    channel_campaign: str = ""


LIVE_CALLS = (
    LiveCall("consent on record", "0612345678", "acme-sales"),
    LiveCall("customer, but commercial telemarketing needs consent", "0612345679", "acme-sales"),
    LiveCall("former donor of a charity", "0612345681", "goededoel-donors"),
    LiveCall("globally suppressed", "0612345690", "acme-sales"),
    LiveCall("caller ID withheld", "0612345678", "acme-sales", callingpres=0x20),
    LiveCall("campaign from the channel variable", "0612345678", None, channel_campaign="acme-sales"),
    LiveCall("campaign nobody configured", "0612345678", "spam-blast"),
)


def _port(preferred: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def _demo_clock(settings: Settings) -> tuple[Callable[[], dt.datetime], str]:
    """The real time when calls are allowed now; otherwise a clock running from the next workday 10:30."""
    now = dt.datetime.now(AMSTERDAM)
    hours = settings.campaigns["acme-sales"].jurisdiction.hours.check(now)
    if hours.allowed:
        return (lambda: dt.datetime.now(dt.UTC)), f"now ({now:%a %d %b %H:%M} in Amsterdam)"
    start, t0 = _next_workday_morning(now), time.monotonic()
    note = (
        f"It is {now:%a %H:%M} in Amsterdam, outside the calling hours, so the demo service decides as if it "
        f"were {start:%a %d %b %H:%M} (a real `gatekeeper serve` always uses the real time)"
    )
    return (lambda: start + dt.timedelta(seconds=time.monotonic() - t0)), note


async def _live_call(port: int, call: LiveCall) -> str:
    query = f"?campaign={call.campaign}" if call.campaign is not None else ""
    url = f"agi://127.0.0.1:{port}/check{query}"
    channel = SimChannel(
        url=url,
        extension=call.number,
        callerid_num="+31201234567",
        callerid_name="Acme Sales",
        callingpres=call.callingpres,
        variables={"GATEKEEPER_CAMPAIGN": call.channel_campaign} if call.channel_campaign else {},
    )
    result = await run_session("127.0.0.1", port, channel=channel)
    v = result.variables
    shown = f"AGI(agi://127.0.0.1:{port}/check{query})"
    masked = normalise(call.number, "NL").masked
    return (
        f"  {masked:<16}{shown:<58} {v.get('GATEKEEPER_RESULT', '-'):<6}{v.get('GATEKEEPER_REASON', '-'):<18}"
        f"AGISTATUS={result.agi_status.value} {result.duration * 1000:.1f} ms  {call.title}\n"
    )


async def run_demo(redis_url: str | None = None, *, keep_serving: bool = False, workdir: Path | None = None) -> int:
    """The demo: the rule book on sample data, then live calls through `gatekeeper serve` over FastAGI."""
    async with AsyncExitStack() as stack:
        url = await _ensure_redis(stack, redis_url)
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gatekeeper-demo-")))
        workdir.mkdir(parents=True, exist_ok=True)
        agi_port, http_port = _port(4573), _port(8080)
        config_path = workdir / "gatekeeper.toml"
        config_path.write_text(
            DEMO_CONFIG.format(
                redis_url=url, pepper=DEMO_PEPPER, agi_port=agi_port, http_port=http_port, workdir=workdir.absolute()
            )
        )
        token, token_entry = new_token("demo", Role.ADMIN)
        settings: Settings = with_token(load(config_path, env={}), token_entry)
        clock, clock_note = _demo_clock(settings)
        service = build_service(settings, clock=clock)
        index = service.index
        await _reset(index)
        sample = resources.files("gatekeeper.demo") / "consents.csv"
        with resources.as_file(sample) as path:
            report = await Loader(index).load(path, region="NL", replace=True)
        tenants = ", ".join(f"{t} (generation {r.generation})" for t, r in sorted(report.tenants.items()))
        print(f"loaded {report.accepted} sample records for {tenants} from consents.csv\n")

        print("1. The rule book: sample calls at chosen times, decided by the gate\n")
        gate = dry_gate(settings, index)  # scenarios, not calls: nothing of them goes into the decision log
        print(f"{'VERDICT':<8}{'REASON':<18}{'NUMBER':<17}{'CAMPAIGN':<18}{'CALL TIME (Amsterdam)':<24}SCENARIO")
        for s in SCENARIOS:
            request = CallRequest(s.number, s.campaign, s.caller_id, s.presentation, s.at, source=Source.CLI)
            sys.stdout.write(_line(s, await gate.check(request)))
        print("(ALLOW* = monitor mode: allowed, but enforcement would block.)\n")

        await service.start()
        stack.push_async_callback(service.stop)
        print(f"2. gatekeeper serve: FastAGI on 127.0.0.1:{agi_port}, HTTP on 127.0.0.1:{http_port}")
        print(f"   Calls from a simulated Asterisk, decided {clock_note}:\n")
        for call in LIVE_CALLS:
            sys.stdout.write(await _live_call(agi_port, call))
        compliance = service.web[WEB_KEY].compliance
        objection = compliance.objection_input("acme", None, "+31612345678", "demo")
        await compliance.object(Principal("demo", Role.ADMIN), "demo", objection)
        print("\n   An objection registered now (as the API and the UI do) blocks the next call:")
        sys.stdout.write(await _live_call(agi_port, LIVE_CALLS[0]))

        if keep_serving:
            print(
                f"\n3. Still serving. In a real dialplan:\n"
                f"     same => n,AGI(agi://127.0.0.1:{agi_port}/check?campaign=acme-sales)\n"
                f'     same => n,GotoIf($["${{GATEKEEPER_RESULT}}" != "ALLOW"]?blocked,1)\n'
                f"   (asterisk-config/extensions.conf has the whole context.)\n"
                f"   Compliance UI: http://127.0.0.1:{http_port}/   (log in with the demo token {token})\n"
                f"   API:     curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{http_port}/api/v1/decisions\n"
                f"   Metrics: http://127.0.0.1:{http_port}/metrics   health: http://127.0.0.1:{http_port}/readyz\n"
                f"   Try:     .venv/bin/gatekeeper --config {config_path} check 0612345678 --campaign acme-sales\n"
                f"   Press Ctrl-C to stop."
            )
            await service.wait_for_stop_signal()
    return 0
