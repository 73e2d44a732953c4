"""The ARI Stasis application against the ARI simulator (tests/asterisk_sim/ari.py) and a real Redis.

Every wait is on an event of the simulator or the application, bounded by `STEP`; nothing sleeps to
synchronise. Faults held with an `asyncio.Event` pin the moments in between (a call in flight, a
reconnect in progress).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from gatekeeper.ari import rest
from gatekeeper.ari.app import (
    AriApplication,
    AriTiming,
    StasisArguments,
    backoff_delay,
    parse_arguments,
    parse_presentation,
)
from gatekeeper.config import AriSettings, Settings
from gatekeeper.devservers import PrivateRedis, free_port
from gatekeeper.gate import NOT_RECORDED, CallRequest, Gate
from gatekeeper.index.loader import Loader
from gatekeeper.index.store import ConsentIndex
from gatekeeper.metrics import Metrics
from gatekeeper.record import DecisionRecord
from tests.asterisk_sim.ari import AriSimulator, CallOutcome, Endpoint, RecordedRequest, SimCall
from tests.conftest import make_settings, write_csv

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)  # a Tuesday, 10:30 in Amsterdam: calling hours
STEP = 5.0  # bound on every wait (they take milliseconds)
CALLER = "+31201234567"  # acme-sales' registered caller ID
ALLOWED = "0612345678"  # consent for tenant acme
OBJECTED = "0612345680"  # consent, then an objection
NO_DATA = "0612345690"  # nothing on record
ACME = {"GATEKEEPER_CAMPAIGN": "acme-sales"}
FAST = AriTiming(
    rest_timeout=2.0,
    handler_timeout=4.0,
    stop_timeout=3.0,
    reconnect_initial=0.01,
    reconnect_max=0.05,
    heartbeat=5.0,
)
AUTH = {"Authorization": rest.basic_authorization("gk", "gkpass")}


# -- fixtures and helpers ----------------------------------------------------------------------------


@pytest.fixture
async def loaded(index: ConsentIndex, tmp_path: Path) -> ConsentIndex:
    path = write_csv(
        tmp_path / "consents.csv",
        [
            f"acme,{ALLOWED},consent,2025-01-01,,form-1",
            f"acme,{OBJECTED},consent,2024-01-01,,form-2",
            f"acme,{OBJECTED},objection,2025-01-01,,call",
        ],
    )
    report = await Loader(index).load(path, region="NL", replace=True, now=NOW)
    assert report.error_count == 0
    return index


@dataclass(frozen=True)
class Seen:
    """What the ARI application asked the gate, and the record it got back."""

    request: CallRequest
    record: DecisionRecord


class ObservedGate(Gate):
    """The real gate (recording nowhere), remembering each request with its record."""

    def __init__(
        self, settings: Settings, index: ConsentIndex, seen: list[Seen], *, budget: float | None = None
    ) -> None:
        super().__init__(settings, index, NOT_RECORDED, clock=lambda: NOW, budget=budget)
        self.seen = seen

    async def check(self, request: CallRequest, *, budget: float | None = None) -> DecisionRecord:
        record = await super().check(request, budget=budget)
        self.seen.append(Seen(request, record))
        return record


@pytest.fixture
def decisions() -> list[Seen]:
    return []


@pytest.fixture
def gate(settings: Settings, loaded: ConsentIndex, decisions: list[Seen]) -> Gate:
    return ObservedGate(settings, loaded, decisions)


@pytest.fixture
def metrics(settings: Settings) -> Metrics:
    return Metrics(settings, CollectorRegistry())


@pytest.fixture
async def sim() -> AsyncIterator[AriSimulator]:
    async with AriSimulator() as simulator:
        yield simulator


@pytest.fixture
def app_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="gatekeeper.ari")
    return caplog


def ari_settings(sim: AriSimulator, **overrides: Any) -> AriSettings:
    values: dict[str, Any] = {"url": sim.base_url, "username": "gk", "password": "gkpass", **overrides}
    return AriSettings(**values)


def gauge(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("gatekeeper_ari_connected")


async def wait_request(sim: AriSimulator, predicate: Callable[[RecordedRequest], bool], since: int = 0) -> None:
    async with asyncio.timeout(STEP):
        await sim.wait_for_request(predicate, since=since)


def answered(endpoint: Endpoint) -> Callable[[RecordedRequest], bool]:
    return lambda r: r.endpoint is endpoint and r.status is not None


async def wait_adopted(sim: AriSimulator, since: int = 0) -> None:
    """The application lists the channels in Stasis right after each connect (so it is connected then)."""
    await wait_request(sim, answered(Endpoint.GET_APPLICATION), since)


@asynccontextmanager
async def running(
    sim: AriSimulator, gate: Gate, metrics: Metrics, *, timing: AriTiming = FAST, **ari: Any
) -> AsyncIterator[AriApplication]:
    app = AriApplication(ari_settings(sim, **ari), gate, metrics, timing=timing)
    await app.start()
    try:
        await wait_adopted(sim, len(sim.requests))
        yield app
    finally:
        await app.stop()


async def finish(call: SimCall) -> CallOutcome:
    async with asyncio.timeout(STEP):
        return await call.wait_finished()


async def place(sim: AriSimulator, number: str, **options: Any) -> SimCall:
    options.setdefault("caller", CALLER)
    call = await sim.originate(number, **options)
    await finish(call)
    return call


def requests_for(sim: AriSimulator, call: SimCall) -> list[RecordedRequest]:
    return [r for r in sim.requests if r.path.startswith(f"/ari/channels/{call.channel_id}")]


def decision_for(decisions: list[Seen], call: SimCall) -> Seen:
    (found,) = [d for d in decisions if d.request.uniqueid == call.channel_id]
    return found


def app_messages(caplog: pytest.LogCaptureFixture, level: int = logging.DEBUG) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("gatekeeper.ari") and r.levelno >= level]


def assert_no_plaintext_numbers(caplog: pytest.LogCaptureFixture) -> None:
    text = "\n".join(app_messages(caplog))
    for number in (ALLOWED, OBJECTED, NO_DATA):
        assert number[1:] not in text


def hold_reads(sim: AriSimulator, channel_id: str | None = None) -> asyncio.Event:
    """Hold every GET variable (of one channel) until the returned event is set."""
    hold = asyncio.Event()
    sim.inject_fault(Endpoint.GET_VARIABLE, status=None, hold=hold, times=None, channel_id=channel_id)
    return hold


# -- pure parts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), StasisArguments()),
        (("0612345678",), StasisArguments(number="0612345678")),
        (("0612345678", "acme-sales"), StasisArguments(number="0612345678", campaign="acme-sales")),
        (
            ("campaign=acme-sales", "number=0612345678", "callback=yes"),
            StasisArguments(number="0612345678", campaign="acme-sales", callback=True),
        ),
        (("number=0612345678", "callback=no"), StasisArguments(number="0612345678")),
        (("0612345678", "Campaign=donors"), StasisArguments(number="0612345678", campaign="donors")),
        (("", "acme-sales"), StasisArguments(campaign="acme-sales")),
        (("0612345678", "colour=blue"), StasisArguments(number="0612345678", ignored=("colour",))),
    ],
)
def test_stasis_arguments_are_parsed(args: tuple[str, ...], expected: StasisArguments) -> None:
    assert parse_arguments(args) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("allowed_not_screened", 0x00),
        ("allowed_passed_screen", 0x01),
        ("allowed_failed_screen", 0x02),
        ("allowed", 0x03),
        ("prohib_not_screened", 0x20),
        ("prohib_passed_screen", 0x21),
        ("prohib_failed_screen", 0x22),
        ("prohib", 0x23),
        ("unavailable", 0x43),
        ("67", 67),
        ("", None),
        ("something-new", None),
        (None, None),
    ],
)
def test_presentation_names_map_to_asterisk_values(text: str | None, expected: int | None) -> None:
    assert parse_presentation(text) == expected


def test_backoff_has_full_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    delays = [[backoff_delay(failures, FAST, rng) for _ in range(200)] for failures in range(8)]
    assert all(0.0 <= d <= 0.01 for d in delays[0])
    assert all(0.0 <= d <= 0.02 for d in delays[1])
    assert all(0.0 <= d <= FAST.reconnect_max for row in delays for d in row)
    assert max(delays[7]) > FAST.reconnect_max / 2  # capped, not stuck near zero
    default = AriTiming()
    assert backoff_delay(1000, default, rng) <= default.reconnect_max


# -- calls ---------------------------------------------------------------------------------------------


async def test_allowed_call_sets_the_variables_then_continues(
    sim: AriSimulator,
    gate: Gate,
    metrics: Metrics,
    decisions: list[Seen],
    app_logs: pytest.LogCaptureFixture,
) -> None:
    async with running(sim, gate, metrics) as app:
        assert app.connected and gauge(metrics) == 1.0
        assert (await app.readiness()).ok
        call = await place(sim, ALLOWED, variables=ACME)
    decision = decision_for(decisions, call)
    assert call.outcome is CallOutcome.CONTINUED and call.would_dial
    assert call.variables["GATEKEEPER_RESULT"] == "ALLOW"
    assert call.variables["GATEKEEPER_REASON"] == "consent"
    assert call.variables["GATEKEEPER_DECISION_ID"] == decision.record.decision_id
    assert len(decision.record.decision_id) == 26
    assert call.continued_to is not None and call.continued_to.priority == 2  # the next priority
    assert call.dialplan_log[0] == "GKTRACE outbound-ari exten=0612345678 STASISSTATUS=SUCCESS GATEKEEPER_RESULT=ALLOW"
    request = decision.request
    assert (request.dialled, request.campaign, request.caller_id, request.source) == (
        ALLOWED,
        "acme-sales",
        CALLER,
        "ari",
    )
    assert request.uniqueid == call.channel_id and not request.callback_requested
    # the simulator cannot evaluate CALLERID(pres) or CHANNEL(linkedid) (500): both are best effort
    assert request.presentation is None and request.linkedid == ""

    log = requests_for(sim, call)
    assert all(r.authorized for r in sim.requests)
    reads = [r for r in log if r.endpoint is Endpoint.GET_VARIABLE]
    assert sorted(r.param("variable") or "" for r in reads) == [
        "CALLERID(pres)",
        "CHANNEL(linkedid)",
        "GATEKEEPER_CAMPAIGN",
    ]
    sets = [r for r in log if r.endpoint is Endpoint.SET_VARIABLE]
    assert [r.param("variable") for r in sets][-1] == "GATEKEEPER_RESULT"  # the verdict goes last
    assert {r.param("variable") for r in sets[:2]} == {"GATEKEEPER_REASON", "GATEKEEPER_DECISION_ID"}
    (cont,) = [r for r in log if r.endpoint is Endpoint.CONTINUE]
    assert cont.query == () and cont.raw_path == f"/ari/channels/{call.channel_id}/continue"
    assert log.index(cont) == len(log) - 1 and all(log.index(r) < log.index(cont) for r in sets + reads)
    assert [e.type for e in sim.events_for(call)] == ["StasisStart", *["ChannelVarset"] * 3, "StasisEnd"]
    assert not app_messages(app_logs, logging.ERROR)
    assert_no_plaintext_numbers(app_logs)


async def test_blocked_call_continues_with_block_and_reason(
    sim: AriSimulator, gate: Gate, metrics: Metrics, app_logs: pytest.LogCaptureFixture
) -> None:
    async with running(sim, gate, metrics):
        call = await place(sim, OBJECTED, variables=ACME)
        other = await place(sim, NO_DATA, variables=ACME)
    assert call.outcome is CallOutcome.CONTINUED and not call.would_dial
    assert (call.variables["GATEKEEPER_RESULT"], call.variables["GATEKEEPER_REASON"]) == ("BLOCK", "objection")
    assert call.hangup_cause == 16  # the dialplan's own Hangup() after its GotoIf did not dial
    assert (other.variables["GATEKEEPER_RESULT"], other.variables["GATEKEEPER_REASON"]) == ("BLOCK", "no-basis")
    # the simulator cannot read CALLERID(pres) and CHANNEL(linkedid): said once per function, not per call
    assert [m.split(" failed")[0] for m in app_messages(app_logs, logging.WARNING)] == [
        "reading CALLERID(pres)",
        "reading CHANNEL(linkedid)",
    ]
    assert_no_plaintext_numbers(app_logs)


async def test_with_hangup_blocked_a_block_is_hung_up_with_cause_21(
    sim: AriSimulator, gate: Gate, metrics: Metrics
) -> None:
    async with running(sim, gate, metrics, hangup_blocked=True):
        blocked = await place(sim, OBJECTED, variables=ACME)
        allowed = await place(sim, ALLOWED, variables=ACME)
    assert blocked.outcome is CallOutcome.HUNG_UP and blocked.hangup_cause == 21
    assert blocked.variables["HANGUPCAUSE"] == "21"
    assert (blocked.variables["GATEKEEPER_RESULT"], blocked.variables["GATEKEEPER_REASON"]) == ("BLOCK", "objection")
    log = requests_for(sim, blocked)
    (delete,) = [r for r in log if r.endpoint is Endpoint.HANGUP]
    assert delete.query == (("reason_code", "21"),) and delete is log[-1]
    assert len([r for r in log if r.endpoint is Endpoint.SET_VARIABLE]) == 3
    assert not any(r.endpoint is Endpoint.CONTINUE for r in log)
    assert allowed.outcome is CallOutcome.CONTINUED and allowed.would_dial


@pytest.mark.parametrize(
    ("options", "ari", "dialled", "callback", "reads_campaign"),
    [
        pytest.param(
            {"args": (ALLOWED, "acme-sales"), "variables": {"GATEKEEPER_CAMPAIGN": "donors"}, "accountcode": "donors"},
            {},
            ALLOWED,
            False,
            False,
            id="positional-arguments",
        ),
        pytest.param(
            {"args": ("campaign=acme-sales", f"number={ALLOWED}", "callback=yes")},
            {},
            ALLOWED,
            True,
            False,
            id="key-value-arguments",
        ),
        pytest.param(
            {"variables": ACME, "accountcode": "other-sales"},
            {"default_campaign": "donors"},
            ALLOWED,
            False,
            True,
            id="variable",
        ),
        pytest.param({"accountcode": "acme-sales"}, {"default_campaign": "donors"}, ALLOWED, False, True, id="account"),
        pytest.param({}, {"default_campaign": "acme-sales"}, ALLOWED, False, True, id="default"),
    ],
)
async def test_campaign_and_number_sources(
    sim: AriSimulator,
    gate: Gate,
    metrics: Metrics,
    decisions: list[Seen],
    options: dict[str, Any],
    ari: dict[str, Any],
    dialled: str,
    callback: bool,
    reads_campaign: bool,
) -> None:
    # the extension differs from the number in the arguments, which win
    number = NO_DATA if "args" in options else ALLOWED
    async with running(sim, gate, metrics, **ari):
        call = await place(sim, number, **options)
    request = decision_for(decisions, call).request
    assert (request.campaign, request.dialled, request.callback_requested) == ("acme-sales", dialled, callback)
    assert call.would_dial and call.variables["GATEKEEPER_REASON"] == "consent"
    variables_read = [r.param("variable") for r in requests_for(sim, call) if r.endpoint is Endpoint.GET_VARIABLE]
    assert ("GATEKEEPER_CAMPAIGN" in variables_read) is reads_campaign


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        pytest.param({"variables": {"GATEKEEPER_CAMPAIGN": "no-such-campaign"}}, "unknown-campaign", id="unknown"),
        pytest.param({}, "unknown-campaign", id="none-at-all"),
        pytest.param({"variables": ACME, "number": "0123"}, "invalid-number", id="invalid-number"),
    ],
)
async def test_unknown_campaign_and_invalid_number_block(
    sim: AriSimulator, gate: Gate, metrics: Metrics, options: dict[str, Any], reason: str
) -> None:
    number = options.pop("number", ALLOWED)
    async with running(sim, gate, metrics):
        call = await place(sim, number, **options)
    assert call.outcome is CallOutcome.CONTINUED and not call.would_dial
    assert (call.variables["GATEKEEPER_RESULT"], call.variables["GATEKEEPER_REASON"]) == ("BLOCK", reason)


async def test_monitor_mode_campaign_lets_the_call_through_with_the_blocking_reason(
    sim: AriSimulator, gate: Gate, metrics: Metrics, decisions: list[Seen]
) -> None:
    async with running(sim, gate, metrics):
        call = await place(sim, NO_DATA, variables={"GATEKEEPER_CAMPAIGN": "acme-shadow"})
    assert call.would_dial
    assert (call.variables["GATEKEEPER_RESULT"], call.variables["GATEKEEPER_REASON"]) == ("ALLOW", "no-basis")
    assert decision_for(decisions, call).record.would_block


async def test_redis_down_blocks_with_index_unavailable_and_continues(
    sim: AriSimulator, app_logs: pytest.LogCaptureFixture
) -> None:
    down = make_settings(f"redis://127.0.0.1:{free_port()}/0")
    index = ConsentIndex.from_settings(down.index)
    try:
        gate = Gate(down, index, NOT_RECORDED, clock=lambda: NOW)
        metrics = Metrics(down, CollectorRegistry())
        async with running(sim, gate, metrics):
            call = await place(sim, ALLOWED, variables=ACME)
    finally:
        await index.close()
    assert call.outcome is CallOutcome.CONTINUED and not call.would_dial
    assert (call.variables["GATEKEEPER_RESULT"], call.variables["GATEKEEPER_REASON"]) == ("BLOCK", "index-unavailable")
    assert not [m for m in app_messages(app_logs, logging.WARNING) if call.channel_id in m]  # a verdict, not a fault


async def test_redis_stopped_mid_run_blocks_the_next_call(sim: AriSimulator, tmp_path: Path) -> None:
    async with PrivateRedis() as redis_server:
        own = make_settings(redis_server.url)
        index = ConsentIndex.from_settings(own.index)
        try:
            path = write_csv(tmp_path / "c.csv", [f"acme,{ALLOWED},consent,2025-01-01,,form-1"])
            await Loader(index).load(path, region="NL", replace=True, now=NOW)
            gate = Gate(own, index, NOT_RECORDED, clock=lambda: NOW)
            async with running(sim, gate, Metrics(own, CollectorRegistry())):
                before = await place(sim, ALLOWED, variables=ACME)
                redis_server.stop()
                after = await place(sim, ALLOWED, variables=ACME)
        finally:
            await index.close()
    assert before.would_dial
    assert not after.would_dial and after.variables["GATEKEEPER_REASON"] == "index-unavailable"


# -- failures inside a handler -------------------------------------------------------------------------


async def test_a_failed_variable_write_still_releases_the_channel_without_allow(
    sim: AriSimulator, gate: Gate, metrics: Metrics, app_logs: pytest.LogCaptureFixture
) -> None:
    async with running(sim, gate, metrics):
        sim.inject_fault(Endpoint.SET_VARIABLE)
        call = await place(sim, ALLOWED, variables=ACME)
        again = await place(sim, ALLOWED, variables=ACME)
    assert call.outcome is CallOutcome.CONTINUED and not call.would_dial
    assert "GATEKEEPER_RESULT" not in call.variables  # the verdict is set only after reason and id
    assert again.would_dial
    warnings = app_messages(app_logs, logging.WARNING)
    assert len([m for m in warnings if call.channel_id in m]) == 1
    assert "answering failed" in warnings[-1] and "+31 6 ****5678" in warnings[-1]
    assert_no_plaintext_numbers(app_logs)


async def test_a_bug_in_the_gate_still_releases_the_channel(
    sim: AriSimulator, settings: Settings, loaded: ConsentIndex, metrics: Metrics, app_logs: pytest.LogCaptureFixture
) -> None:
    class BrokenGate(Gate):
        async def check(self, request: CallRequest, *, budget: float | None = None) -> DecisionRecord:
            raise RuntimeError("broken on purpose")

    async with running(sim, BrokenGate(settings, loaded, NOT_RECORDED), metrics):
        call = await place(sim, ALLOWED, variables=ACME)
    assert call.outcome is CallOutcome.CONTINUED and not call.would_dial
    assert not [r for r in requests_for(sim, call) if r.endpoint is Endpoint.SET_VARIABLE]
    (error,) = [r for r in app_logs.records if r.levelno >= logging.ERROR]
    assert "deciding failed unexpectedly" in error.getMessage() and error.exc_info is not None


async def test_a_failed_continue_is_retried_then_the_channel_is_hung_up(
    sim: AriSimulator, gate: Gate, metrics: Metrics
) -> None:
    async with running(sim, gate, metrics):
        sim.inject_fault(Endpoint.CONTINUE)
        retried = await place(sim, ALLOWED, variables=ACME)
        sim.inject_fault(Endpoint.CONTINUE, times=2)
        hung_up = await place(sim, ALLOWED, variables=ACME)
    assert retried.outcome is CallOutcome.CONTINUED and retried.would_dial  # the verdict was ALLOW
    assert hung_up.outcome is CallOutcome.HUNG_UP and hung_up.hangup_cause == 21 and not hung_up.would_dial


async def test_a_hung_up_channel_ends_the_handler_quietly(
    sim: AriSimulator, gate: Gate, metrics: Metrics, decisions: list[Seen], app_logs: pytest.LogCaptureFixture
) -> None:
    async with running(sim, gate, metrics) as app:
        hold = hold_reads(sim)
        call = await sim.originate(ALLOWED, caller=CALLER, variables=ACME)
        await wait_request(sim, lambda r: r.endpoint is Endpoint.GET_VARIABLE)
        await sim.far_end_hangup(call)
        hold.set()
        await app.stop()  # waits for the handler
        assert app.in_flight == 0
    assert call.outcome is CallOutcome.FAR_END_HANGUP and not decisions
    assert [r.endpoint for r in requests_for(sim, call)] == [Endpoint.GET_VARIABLE] * 3
    assert all(r.status == 404 for r in requests_for(sim, call))
    assert not app_messages(app_logs, logging.WARNING)
    assert any("hung up while reading the channel" in m for m in app_messages(app_logs, logging.INFO))


async def test_a_handler_that_overruns_its_budget_is_released(
    sim: AriSimulator, gate: Gate, metrics: Metrics, app_logs: pytest.LogCaptureFixture
) -> None:
    timing = AriTiming(rest_timeout=2.0, handler_timeout=0.2, reconnect_initial=0.01)
    async with running(sim, gate, metrics, timing=timing):
        hold = hold_reads(sim)
        call = await place(sim, ALLOWED, variables=ACME)
        hold.set()
    assert call.outcome is CallOutcome.CONTINUED and not call.would_dial
    assert any("reading the channel failed: timed out" in m for m in app_messages(app_logs, logging.WARNING))


async def test_a_rest_call_that_hangs_times_out_and_the_channel_is_released(
    sim: AriSimulator, gate: Gate, metrics: Metrics
) -> None:
    timing = AriTiming(rest_timeout=0.2, handler_timeout=2.0, reconnect_initial=0.01)
    async with running(sim, gate, metrics, timing=timing):
        hold = asyncio.Event()
        sim.inject_fault(Endpoint.SET_VARIABLE, status=None, hold=hold)
        call = await place(sim, ALLOWED, variables=ACME)
        hold.set()
    assert call.outcome is CallOutcome.CONTINUED and not call.would_dial


# -- the websocket -------------------------------------------------------------------------------------


@pytest.mark.parametrize("abrupt", [False, True], ids=["close-frame", "tcp-abort"])
async def test_websocket_drop_reconnects_and_calls_in_stasis_are_finished_through_rest(
    sim: AriSimulator, gate: Gate, metrics: Metrics, abrupt: bool
) -> None:
    async with running(sim, gate, metrics) as app:
        assert app.connected and app.connections == 1 and gauge(metrics) == 1.0
        in_stasis = await sim.originate(ALLOWED, caller=CALLER, variables=ACME)
        hold = hold_reads(sim, in_stasis.channel_id)
        await wait_request(sim, lambda r: r.endpoint is Endpoint.GET_VARIABLE)

        reconnect = asyncio.Event()
        sim.inject_fault(Endpoint.EVENTS, status=None, hold=reconnect)
        mark = len(sim.requests)
        await sim.drop_websocket(abrupt=abrupt)
        await wait_request(sim, lambda r: r.endpoint is Endpoint.EVENTS, mark)  # the reconnect, held
        assert not app.connected and gauge(metrics) == 0.0
        readiness = await app.readiness()
        assert not readiness.ok and "not connected" in readiness.detail

        during_gap = await sim.originate(ALLOWED, caller=CALLER, variables=ACME)
        assert during_gap.outcome is CallOutcome.STASIS_FAILED and not during_gap.would_dial
        assert during_gap.stasis_error is not None and "not active" in during_gap.stasis_error

        hold.set()  # the call already in Stasis is finished through REST while the websocket is down
        assert await finish(in_stasis) is CallOutcome.CONTINUED and in_stasis.would_dial
        assert not app.connected

        mark = len(sim.requests)
        reconnect.set()
        await wait_adopted(sim, mark)
        assert app.connected and app.connections == 2 and gauge(metrics) == 1.0
        assert (await app.readiness()).ok
        after = await place(sim, ALLOWED, variables=ACME)
        assert after.would_dial
    assert not app.connected and gauge(metrics) == 0.0


async def test_channels_left_in_stasis_are_adopted_on_connect(
    sim: AriSimulator, gate: Gate, metrics: Metrics, decisions: list[Seen]
) -> None:
    # a previous gatekeeper process took the calls into Stasis and died before answering them
    async with aiohttp.ClientSession(headers=AUTH) as http:
        ws = await http.ws_connect(sim.events_url())
        async with asyncio.timeout(STEP):
            await sim.wait_connected()
        orphan = await sim.originate(ALLOWED, caller=CALLER, variables=ACME)
        unreadable = await sim.originate(ALLOWED, caller=CALLER, variables=ACME)
        await ws.close()
        async with asyncio.timeout(STEP):
            await sim.wait_disconnected()
    assert orphan.in_stasis and unreadable.in_stasis
    sim.inject_fault(Endpoint.GET_CHANNEL, channel_id=unreadable.channel_id)
    async with running(sim, gate, metrics):
        assert await finish(orphan) is CallOutcome.CONTINUED and orphan.would_dial
        assert await finish(unreadable) is CallOutcome.CONTINUED and not unreadable.would_dial
    assert decision_for(decisions, orphan).request.dialled == ALLOWED
    assert requests_for(sim, orphan)[0].endpoint is Endpoint.GET_CHANNEL
    assert [r.endpoint for r in requests_for(sim, unreadable)] == [Endpoint.GET_CHANNEL, Endpoint.CONTINUE]


async def test_frames_that_are_not_events_are_counted_and_ignored(
    sim: AriSimulator, gate: Gate, metrics: Metrics, app_logs: pytest.LogCaptureFixture
) -> None:
    async with running(sim, gate, metrics) as app:
        connection = sim._apps["gatekeeper"].connection
        assert connection is not None
        await connection.ws.send_str("this is not json")
        await connection.ws.send_str('{"type":"StasisStart","application":"gatekeeper"}')
        await connection.ws.send_str('{"type":"SomethingNew","application":"gatekeeper"}')
        await connection.ws.send_str('{"type":"ApplicationReplaced","application":"gatekeeper"}')
        call = await place(sim, ALLOWED, variables=ACME)
        assert app.ignored_frames == 4 and app.connected and app.connections == 1
    assert call.would_dial
    warnings = [m for m in app_messages(app_logs, logging.WARNING) if not m.startswith("reading ")]
    assert len(warnings) == 3 and "another ARI client" in warnings[-1]
    assert any("unknown type 'SomethingNew'" in m for m in app_messages(app_logs))


async def test_wrong_credentials_keep_it_unready_and_retrying(sim: AriSimulator, gate: Gate, metrics: Metrics) -> None:
    app = AriApplication(ari_settings(sim, password="wrong"), gate, metrics, timing=FAST)
    await app.start()
    try:
        await wait_request(sim, lambda r: r.endpoint is Endpoint.EVENTS and r.status == 401)
        await wait_request(sim, lambda r: r.endpoint is Endpoint.EVENTS, len(sim.requests))  # it retries
        readiness = await app.readiness()
        assert not readiness.ok and "401" in readiness.detail and "wrong" not in readiness.detail
        assert not app.connected and gauge(metrics) == 0.0
    finally:
        await app.stop()
    assert not any(r.authorized for r in sim.requests)


# -- stopping and load ---------------------------------------------------------------------------------


async def test_stop_closes_the_websocket_then_waits_for_calls_in_flight(
    sim: AriSimulator, gate: Gate, metrics: Metrics
) -> None:
    async with running(sim, gate, metrics) as app:
        hold = hold_reads(sim)
        call = await sim.originate(ALLOWED, caller=CALLER, variables=ACME)
        await wait_request(sim, lambda r: r.endpoint is Endpoint.GET_VARIABLE)
        stopping = asyncio.create_task(app.stop())
        async with asyncio.timeout(STEP):
            await sim.wait_disconnected()
        refused = await sim.originate(ALLOWED, caller=CALLER, variables=ACME)
        assert refused.outcome is CallOutcome.STASIS_FAILED
        assert not stopping.done() and app.in_flight == 1 and call.in_stasis
        hold.set()
        async with asyncio.timeout(STEP):
            await stopping
        assert call.finished and app.in_flight == 0
    assert call.outcome is CallOutcome.CONTINUED and call.would_dial
    assert not app.connected and gauge(metrics) == 0.0


async def test_stop_cancels_calls_that_outlast_it_and_still_releases_them(
    sim: AriSimulator, gate: Gate, metrics: Metrics
) -> None:
    timing = AriTiming(rest_timeout=2.0, handler_timeout=10.0, stop_timeout=0.2, reconnect_initial=0.01)
    async with running(sim, gate, metrics, timing=timing) as app:
        hold = hold_reads(sim)
        call = await sim.originate(ALLOWED, caller=CALLER, variables=ACME)
        await wait_request(sim, lambda r: r.endpoint is Endpoint.GET_VARIABLE)
        async with asyncio.timeout(STEP):
            await app.stop()
        hold.set()
    assert call.outcome is CallOutcome.CONTINUED and not call.would_dial


async def test_many_concurrent_calls_are_all_answered(
    sim: AriSimulator, settings: Settings, loaded: ConsentIndex, metrics: Metrics, decisions: list[Seen]
) -> None:
    count = 200
    # a generous index budget: this is about the ARI side answering every call, not Redis under a burst
    gate = ObservedGate(settings, loaded, decisions, budget=STEP)
    async with running(sim, gate, metrics):
        calls = [
            await sim.originate(ALLOWED if i % 2 == 0 else OBJECTED, caller=CALLER, variables=ACME)
            for i in range(count)
        ]
        async with asyncio.timeout(STEP * 2):
            outcomes = await asyncio.gather(*(call.wait_finished() for call in calls))
    assert outcomes == [CallOutcome.CONTINUED] * count
    assert [call.variables["GATEKEEPER_REASON"] for call in calls] == ["consent", "objection"] * (count // 2)
    assert [call.would_dial for call in calls] == [i % 2 == 0 for i in range(count)]
    assert len(decisions) == count and not sim.missed_events
    assert len({call.variables["GATEKEEPER_DECISION_ID"] for call in calls}) == count
