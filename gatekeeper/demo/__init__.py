"""`gatekeeper demo` (`make run`): sample data, explained decisions, live calls over FastAGI.

The demo keeps its data apart from everything else:

- Redis: a private redis-server on a free loopback port (a Redis given with `--redis-url`, or the one at
  `$GATEKEEPER_REDIS_URL`/127.0.0.1:6379 when redis-server is not installed, is shared with others), and
  in any case keys under a prefix of its own (`gkdemo-<random>`), all removed when the demo ends: normally,
  on Ctrl-C or SIGTERM, or after an error.
- The decision log: its own SQLite file in the demo's working directory. The rule-book scenarios of part 1
  are decided at chosen (past and future) times by a gate that records nothing; only the live FastAGI
  calls of part 2 are recorded, in that file.
- Time: the live calls are decided by the demo's clock, which is the real time when calls are allowed now
  and otherwise runs from the next calling morning, so the demo shows the same at any hour.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import TracebackType

import redis.asyncio

from gatekeeper.compose import build_service, dry_gate
from gatekeeper.config import Settings, load, redact_url
from gatekeeper.contract import Source
from gatekeeper.core.calendar import CallingHours
from gatekeeper.core.numbers import normalise
from gatekeeper.core.policy import zone
from gatekeeper.devservers import PrivateRedis, free_port, redis_reachable
from gatekeeper.gate import CallRequest
from gatekeeper.index.loader import Loader
from gatekeeper.record import DecisionRecord
from gatekeeper.simulator.fastagi import SimChannel, run_session
from gatekeeper.web import WEB_KEY
from gatekeeper.web.auth import Principal, Role, new_token, with_token

AMSTERDAM = zone("Europe/Amsterdam")
DEMO_PEPPER = "demo-pepper-not-secret-0123456789"  # the demo's data is public; a deployment keeps its own
KEY_PREFIX = "gkdemo"  # + "-" and 8 random hex digits per run
CALLING_MORNING = dt.time(10, 30)  # when the demo's clock starts outside the calling hours
CALL_MARGIN = dt.timedelta(minutes=15)  # the demo's calls, and some trying out, stay within the hours
CLEANUP_TIMEOUT = 2.0  # seconds for each Redis command of the clean-up
DEMO_CONFIG = """\
# Written by `gatekeeper demo`. A real deployment keeps its pepper secret and stable.
[index]
redis_url = "{redis_url}"
pepper = "{pepper}"
prefix = "{prefix}"

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


# -- part 1: the rule book at chosen times ---------------------------------------------------------


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


# -- part 2: live calls over FastAGI, at the demo's time -------------------------------------------


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


@dataclass(frozen=True, slots=True)
class DemoClock:
    """The time of the demo's live calls: `start`, advancing with the real (monotonic) time."""

    start: dt.datetime
    note: str  # how the demo chose `start`, for the reader
    _origin: float = field(default_factory=time.monotonic, repr=False, compare=False)

    def now(self) -> dt.datetime:
        return (self.start + dt.timedelta(seconds=time.monotonic() - self._origin)).astimezone(dt.UTC)


def demo_clock(hours: CallingHours, now: dt.datetime) -> DemoClock:
    """The real time when calls are allowed now (and for the next minutes); else the next calling morning."""
    local = now.astimezone(AMSTERDAM)
    if _callable(hours, local):
        return DemoClock(local, f"Calls are decided now ({local:%a %d %b %H:%M} in Amsterdam).")
    start = next_calling_morning(hours, local)
    note = (
        f"It is {local:%a %d %b %H:%M} in Amsterdam, outside the calling hours: the demo decides as if it were "
        f"{start:%a %d %b %H:%M}\n   (a real `gatekeeper serve` always uses the real time)."
    )
    return DemoClock(start, note)


def next_calling_morning(hours: CallingHours, after: dt.datetime) -> dt.datetime:
    """The first day's 10:30 after `after` (Amsterdam) at which calls are allowed: no weekend, no holiday."""
    for days in range(32):
        candidate = dt.datetime.combine(after.date() + dt.timedelta(days=days), CALLING_MORNING, tzinfo=AMSTERDAM)
        if candidate > after and _callable(hours, candidate):
            return candidate
    raise ValueError(f"no calling hours at {CALLING_MORNING:%H:%M} in the month after {after:%Y-%m-%d}")


def _callable(hours: CallingHours, local: dt.datetime) -> bool:
    return hours.check(local).allowed and hours.check(local + CALL_MARGIN).allowed


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


# -- the demo's own Redis keys and signals ---------------------------------------------------------


class DemoError(Exception):
    """The demo cannot run here (no Redis): exit status 2 with the message."""


def _redis(stack: AsyncExitStack, url: str | None) -> str:
    """The Redis for the demo: `url`, else a private redis-server, else the shared one when reachable."""
    if url:
        return url
    if shutil.which("redis-server"):
        private = stack.enter_context(PrivateRedis())  # started here, so an interruption cannot orphan it
        print(f"started a private redis-server at {private.url} (stopped when the demo ends)")
        return private.url
    shared = os.environ.get("GATEKEEPER_REDIS_URL", "redis://127.0.0.1:6379/0")
    if redis_reachable(shared):
        print(f"redis-server is not installed: using the Redis at {redact_url(shared)}")
        return shared
    raise DemoError(
        f"the demo needs Redis: install redis-server (`make run` does), or start one at {redact_url(shared)}, "
        "or pass --redis-url"
    )


async def remove_keys(url: str, prefix: str) -> int:
    """Remove every key under `prefix:` from the Redis at `url`; the number removed."""
    client = redis.asyncio.Redis.from_url(url, socket_timeout=CLEANUP_TIMEOUT, socket_connect_timeout=CLEANUP_TIMEOUT)
    removed = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                removed += await client.unlink(*batch)
                batch.clear()
        if batch:
            removed += await client.unlink(*batch)
    finally:
        await client.aclose()
    return removed


async def _clean_up(url: str, prefix: str) -> None:
    try:
        removed = await remove_keys(url, prefix)
    except Exception as exc:  # the demo is ending anyway: say what is left, keep the original outcome
        sys.stderr.write(f"gatekeeper demo: could not remove the keys '{prefix}:*' from {redact_url(url)}: {exc}\n")
        return
    print(f"removed the demo's {removed:,} Redis keys ('{prefix}:*')")


class StopSignals:
    """SIGINT and SIGTERM end the demo: the first cancels it, unless its clean-up has begun; later ones are ignored.

    `received` is the signal that stopped the demo; `expected` says it came while the demo was serving
    (the normal way to end it).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.expected = False
        self._closing = False
        self._task: asyncio.Task[object] | None = None

    def serving(self) -> None:
        self.expected = True

    def closing(self) -> None:
        """From now on the demo is cleaning up: signals no longer interrupt it."""
        self._closing = True

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.received is None and not self._closing and self._task is not None:
            self.received = sig
            self._task.cancel()

    def __enter__(self) -> StopSignals:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        for sig in self.SIGNALS:
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, or no signals here
                break
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            loop.remove_signal_handler(sig)
        if exc_type is asyncio.CancelledError and self.received is not None and self._task is not None:
            self._task.uncancel()
            return True  # stopped by a signal: not an error
        return False


def _port(preferred: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


# -- the demo --------------------------------------------------------------------------------------


async def run_demo(
    redis_url: str | None = None,
    *,
    keep_serving: bool = False,
    workdir: Path | None = None,
    now: dt.datetime | None = None,
) -> int:
    """The demo: the rule book on sample data, then live calls through `gatekeeper serve` over FastAGI.

    `now` is when the demo starts (default: the real time); the live calls are decided from then on, or
    from the next calling morning when that is outside the calling hours. Returns the exit status: 0, or
    128 + the signal's number when SIGINT or SIGTERM stopped it before it was serving. Whatever ends it,
    its Redis keys are removed and its private redis-server is stopped.
    """
    signals = StopSignals()
    with signals:
        async with AsyncExitStack() as stack:
            try:
                await _demo(stack, signals, redis_url, keep_serving, workdir, now or dt.datetime.now(dt.UTC))
            finally:
                signals.closing()
    if signals.received is None or signals.expected:
        return 0
    sys.stderr.write(f"gatekeeper demo: stopped by {signals.received.name}\n")
    return 128 + signals.received.value


async def _demo(
    stack: AsyncExitStack,
    signals: StopSignals,
    redis_url: str | None,
    keep_serving: bool,
    workdir: Path | None,
    now: dt.datetime,
) -> None:
    url = _redis(stack, redis_url)
    prefix = f"{KEY_PREFIX}-{secrets.token_hex(4)}"
    stack.push_async_callback(_clean_up, url, prefix)
    if workdir is None:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gatekeeper-demo-")))
    workdir.mkdir(parents=True, exist_ok=True)
    agi_port, http_port = _port(4573), _port(8080)
    config_path = workdir / "gatekeeper.toml"
    config_path.write_text(
        DEMO_CONFIG.format(
            redis_url=url,
            pepper=DEMO_PEPPER,
            prefix=prefix,
            agi_port=agi_port,
            http_port=http_port,
            workdir=workdir.absolute(),
        )
    )
    token, token_entry = new_token("demo", Role.ADMIN)
    settings: Settings = with_token(load(config_path, env={}), token_entry)
    clock = demo_clock(settings.campaigns["acme-sales"].jurisdiction.hours, now)
    service = build_service(settings, clock=clock.now)
    stack.push_async_callback(service.stop)  # also closes the index's connections when it never started
    print(f"the demo's Redis keys: '{prefix}:*' (removed when the demo ends)")

    sample = resources.files("gatekeeper.demo") / "consents.csv"
    with resources.as_file(sample) as path:
        report = await Loader(service.index).load(path, region="NL", replace=True)
    tenants = ", ".join(f"{t} (generation {r.generation})" for t, r in sorted(report.tenants.items()))
    print(f"loaded {report.accepted} sample records for {tenants} from consents.csv\n")

    print("1. The rule book: sample calls at chosen times, decided by the gate (and recorded nowhere)\n")
    rule_book = dry_gate(settings, service.index)  # no recorder, no listeners: not calls, not evidence
    print(f"{'VERDICT':<8}{'REASON':<18}{'NUMBER':<17}{'CAMPAIGN':<18}{'CALL TIME (Amsterdam)':<24}SCENARIO")
    for s in SCENARIOS:
        request = CallRequest(s.number, s.campaign, s.caller_id, s.presentation, s.at, source=Source.CLI)
        sys.stdout.write(_line(s, await rule_book.check(request)))
    print("(ALLOW* = monitor mode: allowed, but enforcement would block.)\n")

    await service.start()
    print(f"2. gatekeeper serve: FastAGI on 127.0.0.1:{agi_port}, HTTP on 127.0.0.1:{http_port}")
    print(f"   {clock.note}")
    log_path = workdir.absolute() / "decisions.db"
    print(f"   Calls from a simulated Asterisk, recorded in the demo's own decision log {log_path}:\n")
    for call in LIVE_CALLS:
        sys.stdout.write(await _live_call(agi_port, call))
    compliance = service.web[WEB_KEY].compliance
    objection = compliance.objection_input("acme", None, "+31612345678", "demo")
    await compliance.object(Principal("demo", Role.ADMIN), "demo", objection)
    print("\n   An objection registered now (as the API and the UI do) blocks the next call:")
    sys.stdout.write(await _live_call(agi_port, LIVE_CALLS[0]))
    if not keep_serving:
        return
    print(
        f"\n3. Still serving. In a real dialplan:\n"
        f"     same => n,AGI(agi://127.0.0.1:{agi_port}/check?campaign=acme-sales)\n"
        f'     same => n,GotoIf($["${{GATEKEEPER_RESULT}}" != "ALLOW"]?blocked,1)\n'
        f"   (asterisk-config/extensions.conf has the whole context.)\n"
        f"   Compliance UI: http://127.0.0.1:{http_port}/   (log in with the demo token {token})\n"
        f"   API:     curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{http_port}/api/v1/decisions\n"
        f"   Metrics: http://127.0.0.1:{http_port}/metrics   health: http://127.0.0.1:{http_port}/readyz\n"
        f"   Try:     .venv/bin/gatekeeper --config {config_path} check 0612345678 --campaign acme-sales\n"
        f"   Press Ctrl-C to stop (the demo's Redis keys are removed then).",
        flush=True,
    )
    signals.serving()
    await asyncio.Event().wait()  # until SIGINT or SIGTERM
