"""The ARI simulator behaves as the recorded Asterisk 23.4.1 does (../shared/asterisk-traces).

The first test replays ari-rest.txt request by request against the simulator and compares every
response, every websocket frame (ari-events.jsonl) and every dialplan log line (ari-timeline.txt). The
others pin single behaviours. The client is a plain aiohttp ClientSession, as gatekeeper's will be.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from gatekeeper.ari import rest
from gatekeeper.ari.events import (
    ChannelDestroyed,
    ChannelHangupRequest,
    ChannelStateChange,
    ChannelVarset,
    Event,
    StasisEnd,
    StasisStart,
    parse_event,
)
from tests.asterisk_sim.ari import (
    AriSimulator,
    CallOutcome,
    DialplanTarget,
    Endpoint,
    EventTiming,
    RecordedRequest,
    SimCall,
)
from tests.asterisk_sim.traces import TRACES_DIR

pytestmark = pytest.mark.integration

TRACES = TRACES_DIR
AUTH = {"Authorization": rest.basic_authorization("gk", "gkpass")}
STEP = 2.0  # bound on every single wait in these tests (they take milliseconds)


def _trace(name: str) -> str:
    path = TRACES / name
    if not path.is_file():
        pytest.fail(f"Asterisk trace {path} is missing: the traces must sit beside the checkout")
    return path.read_text(encoding="utf-8")


# -- reading the traces --------------------------------------------------------------------------


@dataclass
class Exchange:
    """One request/response pair of ari-rest.txt."""

    method: str
    target: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int = 0
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Note:
    """A `###` annotation of ari-rest.txt (what the capture script did between requests)."""

    text: str


def _http_message(lines: list[str]) -> tuple[str, dict[str, str], bytes]:
    start, *rest_lines = lines
    blank = rest_lines.index("")
    headers = dict(line.split(": ", 1) for line in rest_lines[:blank])
    body = "\n".join(rest_lines[blank + 1 :]).strip("\n").encode()
    return start, headers, body


def read_rest_trace() -> list[Exchange | Note]:
    items: list[Exchange | Note] = []
    block: list[str] = []
    marker = ""

    def flush() -> None:
        if not block:
            return
        start, headers, body = _http_message(block)
        if marker == "<<<":
            method, target, _version = start.split(" ")
            items.append(Exchange(method, target, headers, body))
        else:
            exchange = items[-1]
            assert isinstance(exchange, Exchange)
            _version, status, exchange.reason = start.split(" ", 2)
            exchange.status, exchange.headers, exchange.body = int(status), headers, body
        block.clear()

    for line in _trace("ari-rest.txt").splitlines():
        prefix = line[:3]
        if prefix in ("<<<", ">>>"):
            if prefix != marker:
                flush()
                marker = prefix
            block.append(line[4:])
            continue
        flush()
        marker = ""
        if line.startswith("### "):
            items.append(Note(line))
    flush()
    for item in items:
        if isinstance(item, Exchange) and "Content-Length" in item.headers:
            assert len(item.body) == int(item.headers["Content-Length"]), item.target
    return items


@dataclass(frozen=True)
class TracedChannel:
    channel_id: str
    name: str
    creationtime: datetime


def traced_channels() -> dict[str, TracedChannel]:
    """Number -> the channel Asterisk created for it: from StasisStart frames, or from the log for the
    calls that never entered Stasis."""
    channels: dict[str, TracedChannel] = {}
    for line in _trace("ari-events.jsonl").splitlines():
        event = parse_event(line)
        if isinstance(event, StasisStart):
            channel = event.channel
            channels[channel.dialplan.exten] = TracedChannel(channel.id, channel.name, channel.creationtime)
    for number, name in re.findall(r'Executing \[(\d+)@outbound-ari:1\] Stasis\("([^"]+)"', _trace("ari-timeline.txt")):
        if number not in channels:
            channels[number] = TracedChannel("", name, datetime(2026, 11, 28, 10, 2, 23, tzinfo=UTC))
    return channels


def traced_dialplan_log(number: str) -> list[str]:
    """The GKTRACE lines Asterisk logged for the call to `number`."""
    lines = re.findall(r"app_verbose\.c: (GKTRACE .*)", _trace("ari-timeline.txt"))
    return [line for line in lines if f"exten={number} " in line or f"channel=Local/{number}@" in line]


def without_timestamp(frame: str) -> str:
    return re.sub(r'"timestamp":"[^"]*"', '"timestamp":"-"', frame)


def shape(value: object) -> object:
    """Keys (in order) and JSON types of a frame, values left out."""
    if isinstance(value, dict):
        return [(key, shape(item)) for key, item in value.items()]
    if isinstance(value, list):
        return ["list", *[shape(item) for item in value]]
    return type(value).__name__


# -- client side ---------------------------------------------------------------------------------


class EventStream:
    """The test's ARI websocket: a reader task queues every text frame; None marks the close."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[str] = []
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                self.frames.append(message.data)
                await self._queue.put(message.data)
        await self._queue.put(None)

    async def next_frame(self) -> str:
        async with asyncio.timeout(STEP):
            frame = await self._queue.get()
        assert frame is not None, "the websocket closed"
        return frame

    async def next(self) -> Event:
        return parse_event(await self.next_frame())

    async def take(self, count: int) -> list[Event]:
        return [await self.next() for _ in range(count)]

    async def arrived(self, count: int) -> None:
        """Wait until `count` frames have arrived on this socket in all (consuming the queue)."""
        async with asyncio.timeout(STEP):
            while len(self.frames) < count:
                assert await self._queue.get() is not None, "the websocket closed"

    async def wait_closed(self) -> None:
        async with asyncio.timeout(STEP):
            frame = await self._queue.get()
        assert frame is None, f"unexpected frame {frame}"
        await self._reader

    def pending(self) -> int:
        return self._queue.qsize()

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


async def connect(http: aiohttp.ClientSession, sim: AriSimulator, *, api_key: bool = False) -> EventStream:
    ws = await http.ws_connect(sim.events_url(api_key=api_key), headers=None if api_key else AUTH)
    async with asyncio.timeout(STEP):
        await sim.wait_connected()
    return EventStream(ws)


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    body: bytes
    headers: CIMultiDict[str]

    def json(self) -> object:
        return json.loads(self.body)


async def send(
    http: aiohttp.ClientSession, sim: AriSimulator, request: rest.AriRequest, *, json_body: object = None
) -> Reply:
    url = URL(sim.url(request.target), encoded=True)
    async with asyncio.timeout(STEP), http.request(request.method, url, json=json_body, headers=AUTH) as response:
        body = await response.read()
        return Reply(response.status, response.reason or "", body, response.headers.copy())


@pytest.fixture
async def sim() -> AsyncIterator[AriSimulator]:
    async with AriSimulator() as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def events(sim: AriSimulator, http: aiohttp.ClientSession) -> AsyncIterator[EventStream]:
    stream = await connect(http, sim)
    yield stream
    await stream.close()


async def started(sim: AriSimulator, events: EventStream, number: str = "0612345678") -> SimCall:
    call = await sim.originate(number, variables={"GATEKEEPER_CAMPAIGN": "acme"})
    event = await events.next()
    assert isinstance(event, StasisStart)
    assert event.channel.id == call.channel_id
    return call


async def finished(call: SimCall) -> CallOutcome:
    async with asyncio.timeout(STEP):
        return await call.wait_finished()


# -- the whole recorded run, replayed ----------------------------------------------------------------


def delivered(sim: AriSimulator) -> int:
    return sum(event.delivered for event in sim.events)


class TraceClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 10, 2, 23, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_replaying_the_recorded_run_gives_the_recorded_responses_events_and_dialplan() -> None:
    items = read_rest_trace()
    channels = traced_channels()
    clock = TraceClock()
    calls: dict[str, SimCall] = {}
    compared = 0
    async with AriSimulator(clock=clock) as sim, aiohttp.ClientSession() as http:
        stream: EventStream | None = None
        received: list[str] = []
        for item in items:
            if isinstance(item, Note):
                if originate := re.search(r"AMI Originate Channel=Local/(\d+)@outbound-ari", item.text):
                    number = originate.group(1)
                    traced = channels[number]
                    clock.now = traced.creationtime
                    calls[number] = await sim.originate(
                        number,
                        variables={"GATEKEEPER_CAMPAIGN": "acme"},
                        channel_id=traced.channel_id or None,
                        channel_name=traced.name,
                    )
                elif "PHASE connect websocket" in item.text or "websocket reconnects" in item.text:
                    stream = await connect(http, sim, api_key=True)  # as the capture script did
                elif "client closed websocket" in item.text:
                    assert stream is not None
                    await stream.arrived(delivered(sim) - len(received))  # read all, as the script did
                    await stream.close()
                    received += stream.frames
                    stream = None
                    async with asyncio.timeout(STEP):
                        await sim.wait_disconnected()
                continue
            headers = {
                name: value for name, value in item.request_headers.items() if name in ("Authorization", "Content-Type")
            }
            url = URL(sim.url(item.target), encoded=True)
            async with (
                asyncio.timeout(STEP),
                http.request(item.method, url, headers=headers, data=item.request_body or None) as response,
            ):
                body = await response.read()
            where = f"{item.method} {item.target}"
            assert (response.status, response.reason) == (item.status, item.reason), where
            assert body == item.body, where
            for name in ("Server", "Cache-Control", "Content-type", "WWW-Authenticate"):
                assert response.headers.get(name) == item.headers.get(name), (where, name)
            if item.status != 204:
                assert response.headers.get("Content-Length") == item.headers.get("Content-Length"), where
            compared += 1
            if item.target.endswith("/answer"):  # call G: the far end hangs up 1 s after answering
                call = calls["0612345674"]
                await sim.far_end_hangup(call)
        assert stream is not None
        for call in calls.values():
            await finished(call)
        await stream.arrived(delivered(sim) - len(received))
        await stream.close()
        received += stream.frames
        assert compared == 31

        traced_frames = _trace("ari-events.jsonl").splitlines()
        assert [without_timestamp(frame) for frame in received] == [without_timestamp(frame) for frame in traced_frames]
        for number, call in calls.items():
            assert call.dialplan_log == traced_dialplan_log(number), number
        assert calls["0611111111"].stasis_error == "WARNING app_stasis.c: Stasis app 'gatekeeper' doesn't exist"
        assert calls["0612345675"].stasis_error == "ERROR res_stasis.c: Stasis app 'gatekeeper' not active"
        missed = sim.missed_events
        assert [(event.type, json.loads(event.text)["variable"]) for event in missed] == [
            ("ChannelVarset", "GK_WHILE_DISCONNECTED")
        ]
        assert calls["0612345678"].continued_to == DialplanTarget("after-ari", "0612345678", 1)
        assert calls["0612345670"].continued_to == DialplanTarget("after-ari", "0612345670", 10)
        assert calls["0612345672"].continued_to == DialplanTarget("outbound-ari", "0612345672", 2)
        assert {number: call.outcome for number, call in calls.items()} == {
            "0611111111": CallOutcome.STASIS_FAILED,
            "0612345678": CallOutcome.CONTINUED,
            "0612345679": CallOutcome.HUNG_UP,
            "0612345670": CallOutcome.CONTINUED,
            "0612345672": CallOutcome.CONTINUED,
            "0612345673": CallOutcome.HUNG_UP,
            "0612345674": CallOutcome.FAR_END_HANGUP,
            "0612345671": CallOutcome.HUNG_UP,
            "0612345675": CallOutcome.STASIS_FAILED,
        }


# -- single behaviours ---------------------------------------------------------------------------


async def test_stasis_start_has_the_traced_keys_and_types(sim: AriSimulator, events: EventStream) -> None:
    call = await sim.originate("0612345678")
    frame = await events.next_frame()
    traced = json.loads(_trace("ari-events.jsonl").splitlines()[0])
    sent = json.loads(frame)
    assert shape(sent) == shape(traced)
    assert re.fullmatch(r"\d{10}\.\d+", call.channel_id)
    assert re.fullmatch(r"Local/0612345678@outbound-ari-[0-9a-f]{8};2", call.name)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", sent["timestamp"])
    assert sent["args"] == ["0612345678"]
    assert sent["channel"]["dialplan"] == {
        "context": "outbound-ari",
        "exten": "0612345678",
        "priority": 1,
        "app_name": "Stasis",
        "app_data": "gatekeeper,0612345678",
    }


async def test_originate_passes_args_caller_and_accountcode(sim: AriSimulator, events: EventStream) -> None:
    await sim.originate(
        "0612345678",
        args=["0612345678", "acme", "with space"],
        caller="+31201234567",
        caller_name="Acme",
        accountcode="acct",
    )
    event = await events.next()
    assert isinstance(event, StasisStart)
    assert event.args == ("0612345678", "acme", "with space")
    assert event.channel.dialplan.app_data == "gatekeeper,0612345678,acme,with space"
    assert (event.channel.caller.number, event.channel.caller.name) == ("+31201234567", "Acme")
    assert event.channel.accountcode == "acct"


async def test_channel_ids_are_unique_uniqueids(sim: AriSimulator, events: EventStream) -> None:
    first = await started(sim, events, "0612345678")
    second = await started(sim, events, "0612345679")
    assert first.channel_id != second.channel_id
    assert first.name != second.name


async def test_requests_without_valid_credentials_get_401(sim: AriSimulator, http: aiohttp.ClientSession) -> None:
    for headers in (
        {},
        {"Authorization": rest.basic_authorization("gk", "wrong")},
        {"Authorization": rest.basic_authorization("other", "gkpass")},
    ):
        async with http.get(sim.url("/ari/channels"), headers=headers) as response:
            assert (response.status, response.reason) == (401, "Unauthorized")
            assert response.headers["WWW-Authenticate"] == 'Basic realm="Asterisk REST Interface"'
            assert response.headers["Server"] == "Asterisk/23.4.1"
            assert response.headers["Cache-Control"] == "no-cache, no-store"
            assert await response.json() == {"message": "Authentication required"}
    async with http.get(sim.url("/ari/channels"), headers={"Authorization": "Bearer x"}) as response:
        assert response.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(sim.events_url())
    assert refused.value.status == 401
    assert not sim.is_connected()
    assert [request.authorized for request in sim.requests] == [False] * 5


async def test_api_key_in_the_url_is_accepted_like_asterisk(sim: AriSimulator, http: aiohttp.ClientSession) -> None:
    stream = await connect(http, sim, api_key=True)
    assert sim.is_connected()
    await stream.close()


async def test_stasis_without_a_websocket_fails_at_once(sim: AriSimulator, http: aiohttp.ClientSession) -> None:
    call = await sim.originate("0611111111", variables={"GATEKEEPER_CAMPAIGN": "acme"})
    assert call.finished
    assert call.outcome is CallOutcome.STASIS_FAILED
    assert call.variables["STASISSTATUS"] == "FAILED"
    assert call.stasis_error == "WARNING app_stasis.c: Stasis app 'gatekeeper' doesn't exist"
    assert not call.would_dial
    assert sim.events == []
    reply = await send(http, sim, rest.get_channel(call.channel_id))
    assert (reply.status, reply.json()) == (404, {"message": "Channel not found"})
    applications = await send(http, sim, rest.AriRequest(rest.Method.GET, "/ari/applications"))
    assert applications.body == b"[]"


async def test_a_channel_in_stasis_survives_a_dropped_socket(
    sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream
) -> None:
    call = await started(sim, events)
    await sim.drop_websocket()
    await events.wait_closed()
    assert not sim.is_connected()
    assert call.in_stasis

    # REST still works; the event it causes is dropped, not queued
    assert (await send(http, sim, rest.set_variable(call.channel_id, "GK_WHILE_DISCONNECTED", "1"))).status == 204
    assert [(event.type, event.delivered) for event in sim.missed_events] == [("ChannelVarset", False)]

    # a new call meanwhile fails at once: the app is deactivated, not gone
    other = await sim.originate("0612345675")
    assert other.outcome is CallOutcome.STASIS_FAILED
    assert other.stasis_error == "ERROR res_stasis.c: Stasis app 'gatekeeper' not active"

    application = await send(http, sim, rest.get_application("gatekeeper"))
    assert application.json() == {
        "name": "gatekeeper",
        "channel_ids": [call.channel_id],
        "bridge_ids": [],
        "endpoint_ids": [],
        "device_names": [],
        "events_allowed": [],
        "events_disallowed": [],
    }

    again = await connect(http, sim)
    assert (await send(http, sim, rest.hangup(call.channel_id))).status == 204
    hangup, end = await again.take(2)  # nothing of the gap is replayed first
    assert isinstance(hangup, ChannelHangupRequest)
    assert (hangup.cause, hangup.soft) == (32, True)
    assert isinstance(end, StasisEnd)
    assert await finished(call) is CallOutcome.HUNG_UP
    assert call.variables["GK_WHILE_DISCONNECTED"] == "1"
    await again.close()


async def test_an_abrupt_drop_also_keeps_the_channel(
    sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream
) -> None:
    call = await started(sim, events)
    await sim.drop_websocket(abrupt=True)
    await events.wait_closed()
    assert call.in_stasis
    assert (await sim.originate("0612345679")).outcome is CallOutcome.STASIS_FAILED
    again = await connect(http, sim)
    assert (await send(http, sim, rest.continue_in_dialplan(call.channel_id))).status == 204
    assert isinstance(await again.next(), StasisEnd)
    await again.close()


async def test_a_client_close_deactivates_the_app(sim: AriSimulator, http: aiohttp.ClientSession) -> None:
    stream = await connect(http, sim)
    await stream.close()
    async with asyncio.timeout(STEP):
        await sim.wait_disconnected()
    assert (await sim.originate("0612345678")).outcome is CallOutcome.STASIS_FAILED


async def test_set_variable_by_query_and_by_json_body(
    sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream
) -> None:
    call = await started(sim, events)
    tricky = 'ALLOW+via ari & more=yes %20 "quoted" back\\slash é'
    reply = await send(http, sim, rest.set_variable(call.channel_id, "GATEKEEPER_RESULT", tricky))
    assert (reply.status, reply.reason, reply.body) == (204, "No Content", b"")
    assert "Content-type" not in reply.headers
    varset = await events.next()
    assert isinstance(varset, ChannelVarset)
    assert (varset.variable, varset.value) == ("GATEKEEPER_RESULT", tricky)

    body_request = rest.AriRequest(rest.Method.POST, f"/ari/channels/{call.channel_id}/variable")
    value = 'say "hi" back\\slash'
    reply = await send(http, sim, body_request, json_body={"variable": "GK_JSON_BODY", "value": value})
    assert reply.status == 204
    varset = await events.next()
    assert isinstance(varset, ChannelVarset)
    assert varset.value == value
    read = await send(http, sim, rest.get_variable(call.channel_id, "GK_JSON_BODY"))
    assert read.body == b'{"value":"say \\"hi\\" back\\\\slash"}'
    assert rest.parse_variable_value(read.body) == value
    assert call.variables == {"GATEKEEPER_CAMPAIGN": "acme", "GATEKEEPER_RESULT": tricky, "GK_JSON_BODY": value}


async def test_get_variable(sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream) -> None:
    call = await started(sim, events)
    reply = await send(http, sim, rest.get_variable(call.channel_id, "GATEKEEPER_CAMPAIGN"))
    assert (reply.status, reply.body, reply.headers["Content-type"]) == (200, b'{"value":"acme"}', "application/json")
    missing = await send(http, sim, rest.get_variable(call.channel_id, "NOT_SET_ANYWHERE"))
    assert (missing.status, missing.reason) == (404, "Variable Not Found")
    assert missing.body == b'{"message":"Provided variable was not found"}'
    error = rest.parse_error(missing.status, missing.body, reason=missing.reason)
    assert error.not_found
    assert error.message == "Provided variable was not found"
    builtin = await send(http, sim, rest.get_variable(call.channel_id, "CHANNEL"))
    assert builtin.json() == {"value": call.name}
    function = await send(http, sim, rest.get_variable(call.channel_id, "CALLERID(num)"))
    assert function.json() == {"value": ""}


async def test_continue_without_parameters_goes_to_the_next_priority(
    sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream
) -> None:
    call = await started(sim, events, "0612345672")
    await send(http, sim, rest.set_variable(call.channel_id, "GATEKEEPER_RESULT", "ALLOW"))
    assert isinstance(await events.next(), ChannelVarset)
    assert (await send(http, sim, rest.continue_in_dialplan(call.channel_id))).status == 204
    assert isinstance(await events.next(), StasisEnd)
    assert await finished(call) is CallOutcome.CONTINUED
    assert call.continued_to == DialplanTarget("outbound-ari", "0612345672", 2)
    assert call.variables["STASISSTATUS"] == "SUCCESS"
    assert call.gatekeeper_result == "ALLOW"
    assert call.would_dial
    assert call.dialplan_log == [
        "GKTRACE outbound-ari exten=0612345672 STASISSTATUS=SUCCESS GATEKEEPER_RESULT=ALLOW",
        "GKTRACE outbound-ari h-exten channel="
        + call.name
        + " STASISSTATUS=SUCCESS GATEKEEPER_RESULT=ALLOW HANGUPCAUSE=16",
    ]
    assert [event.type for event in sim.events_for(call)] == ["StasisStart", "ChannelVarset", "StasisEnd"]


async def test_continue_to_a_context_defaults_to_extension_s_priority_1(
    sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream
) -> None:
    call = await started(sim, events)
    request = rest.continue_in_dialplan(call.channel_id, context="somewhere-else")
    assert (await send(http, sim, request)).status == 204
    await finished(call)
    assert call.continued_to == DialplanTarget("somewhere-else", "s", 1)
    assert not call.would_dial


async def test_hangup_with_reason_code_21_is_what_the_h_extension_sees(
    sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream
) -> None:
    call = await started(sim, events, "0612345679")
    await send(http, sim, rest.set_variable(call.channel_id, "GATEKEEPER_RESULT", "DENY"))
    await events.next()
    reply = await send(http, sim, rest.hangup(call.channel_id))
    assert (reply.status, reply.body) == (204, b"")
    hangup, end = await events.take(2)
    assert isinstance(hangup, ChannelHangupRequest)
    assert (hangup.cause, hangup.soft) == (32, True)
    assert isinstance(end, StasisEnd)
    assert await finished(call) is CallOutcome.HUNG_UP
    assert (call.hangup_cause, call.variables["HANGUPCAUSE"], call.variables["STASISSTATUS"]) == (21, "21", "SUCCESS")
    # without a subscription no ChannelDestroyed is sent
    assert [event.type for event in sim.events_for(call)] == [
        "StasisStart",
        "ChannelVarset",
        "ChannelHangupRequest",
        "StasisEnd",
    ]
    again = await send(http, sim, rest.hangup(call.channel_id))
    assert (again.status, again.reason, again.json()) == (404, "Not Found", {"message": "Channel not found"})


async def test_reason_and_reason_code_together_are_refused(
    sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream
) -> None:
    call = await started(sim, events)
    request = rest.AriRequest(rest.Method.DELETE, f"/ari/channels/{call.channel_id}", "reason=busy&reason_code=21")
    reply = await send(http, sim, request)
    assert (reply.status, reply.reason) == (400, "Bad Request")
    assert reply.json() == {"message": "The reason and reason_code can't both be specified"}
    assert call.in_stasis
    named = rest.AriRequest(rest.Method.DELETE, f"/ari/channels/{call.channel_id}", "reason=busy")
    assert (await send(http, sim, named)).status == 204
    await finished(call)
    assert call.variables["HANGUPCAUSE"] == "17"


async def test_subscription_brings_channel_destroyed_after_hangup(
    sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream
) -> None:
    call = await started(sim, events, "0612345673")
    reply = await send(http, sim, rest.subscribe_channel("gatekeeper", call.channel_id))
    assert reply.status == 200
    assert reply.json() == {
        "name": "gatekeeper",
        "channel_ids": [call.channel_id],
        "bridge_ids": [],
        "endpoint_ids": [],
        "device_names": [],
        "events_allowed": [],
        "events_disallowed": [],
    }
    await send(http, sim, rest.hangup(call.channel_id))
    got = await events.take(6)
    assert [event.type for event in got] == [
        "ChannelHangupRequest",
        "StasisEnd",
        "ChannelVarset",
        "ChannelHangupRequest",
        "ChannelDialplan",
        "ChannelDestroyed",
    ]
    destroyed = got[-1]
    assert isinstance(destroyed, ChannelDestroyed)
    assert (destroyed.cause, destroyed.cause_txt) == (21, "Call Rejected")
    assert (destroyed.channel.dialplan.exten, destroyed.channel.dialplan.priority) == ("h", 2)
    assert (await send(http, sim, rest.get_application("gatekeeper"))).json() == {
        "name": "gatekeeper",
        "channel_ids": [],
        "bridge_ids": [],
        "endpoint_ids": [],
        "device_names": [],
        "events_allowed": [],
        "events_disallowed": [],
    }


async def test_subscribed_continue_and_far_end_hangup_end_in_channel_destroyed(
    sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream
) -> None:
    """Not in the traces (extrapolated from call F): a subscription outlives StasisEnd until the channel
    is destroyed with its HANGUPCAUSE."""
    continued = await started(sim, events, "0612345672")
    await send(http, sim, rest.subscribe_channel("gatekeeper", continued.channel_id))
    await send(http, sim, rest.continue_in_dialplan(continued.channel_id))
    got = await events.take(3)
    assert [event.type for event in got] == ["StasisEnd", "ChannelVarset", "ChannelDestroyed"]
    assert isinstance(got[-1], ChannelDestroyed)
    assert (got[-1].cause, got[-1].cause_txt) == (16, "Normal Clearing")

    far = await started(sim, events, "0612345674")
    await send(http, sim, rest.subscribe_channel("gatekeeper", far.channel_id))
    await sim.far_end_hangup(far)
    got = await events.take(5)
    assert [event.type for event in got] == [
        "ChannelHangupRequest",
        "StasisEnd",
        "ChannelVarset",
        "ChannelDialplan",
        "ChannelDestroyed",
    ]
    assert isinstance(got[-1], ChannelDestroyed)
    assert (got[-1].cause, got[-1].cause_txt) == (0, "Unknown")


async def test_subscription_errors(sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream) -> None:
    missing = await send(http, sim, rest.subscribe_channel("gatekeeper", "nonexistent-id"))
    assert (missing.status, missing.json()) == (422, {"message": "Event source does not exist"})
    no_app = await send(http, sim, rest.subscribe_channel("other-app", "1.1"))
    assert (no_app.status, no_app.json()) == (404, {"message": "Application not found"})
    no_source = rest.AriRequest(rest.Method.POST, "/ari/applications/gatekeeper/subscription")
    assert (await send(http, sim, no_source)).json() == {"message": "Missing parameter eventSource"}


async def test_far_end_hangup_in_stasis(sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream) -> None:
    call = await started(sim, events, "0612345674")
    assert (
        await send(http, sim, rest.AriRequest(rest.Method.POST, f"/ari/channels/{call.channel_id}/answer"))
    ).status == 204
    change = await events.next()
    assert isinstance(change, ChannelStateChange)
    assert change.channel.state == "Up"
    await sim.far_end_hangup(call)
    hangup_frame = await events.next_frame()
    assert "soft" not in json.loads(hangup_frame)
    hangup = parse_event(hangup_frame)
    assert isinstance(hangup, ChannelHangupRequest)
    assert (hangup.cause, hangup.soft, hangup.channel.state) == (16, False, "Up")
    assert isinstance(await events.next(), StasisEnd)
    assert await finished(call) is CallOutcome.FAR_END_HANGUP
    assert call.variables["HANGUPCAUSE"] == "0"  # as the h extension of call G saw it
    with pytest.raises(ValueError, match="not in Stasis"):
        await sim.far_end_hangup(call)


async def test_a_channel_that_left_stasis_is_gone_for_every_call(
    sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream
) -> None:
    call = await started(sim, events)
    request = rest.continue_in_dialplan(call.channel_id, context="after-ari", extension="0612345678", priority=1)
    assert (await send(http, sim, request)).status == 204
    await finished(call)
    gone = {"message": "Channel not found"}
    for again in (
        rest.set_variable(call.channel_id, "X", "Y"),
        request,
        rest.hangup(call.channel_id),
        rest.get_channel(call.channel_id),
        rest.set_variable("nonexistent-id", "A", "B"),
        rest.continue_in_dialplan("nonexistent-id", context="after-ari", extension="1", priority=1),
        rest.hangup("nonexistent-id"),
    ):
        reply = await send(http, sim, again)
        assert (reply.status, reply.reason, reply.json()) == (404, "Not Found", gone), again
    # GET variable words it differently (res/ari/resource_channels.c)
    reply = await send(http, sim, rest.get_variable(call.channel_id, "GATEKEEPER_RESULT"))
    assert (reply.status, reply.reason, reply.json()) == (
        404,
        "Channel Not Found",
        {"message": "Provided channel was not found"},
    )
    assert call.dialplan_log == [
        "GKTRACE after-ari exten=0612345678 priority=1 STASISSTATUS=SUCCESS GATEKEEPER_RESULT="
    ]


async def test_unknown_resources_and_methods(sim: AriSimulator, http: aiohttp.ClientSession) -> None:
    unknown = await send(http, sim, rest.AriRequest(rest.Method.GET, "/ari/bridges"))
    assert (unknown.status, unknown.json()) == (404, {"message": "Resource not found"})
    wrong = await send(http, sim, rest.AriRequest(rest.Method.DELETE, "/ari/applications"))
    assert (wrong.status, wrong.json()) == (405, {"message": "Invalid method"})


async def test_asterisk_info(sim: AriSimulator, http: aiohttp.ClientSession) -> None:
    info = await send(http, sim, rest.AriRequest(rest.Method.GET, "/ari/asterisk/info", "only=system"))
    assert info.json() == {"system": {"version": "23.4.1", "entity_id": "02:fc:00:00:00:01"}}


async def test_requests_are_recorded(sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream) -> None:
    call = await started(sim, events)
    mark = len(sim.requests)
    body_request = rest.AriRequest(rest.Method.POST, f"/ari/channels/{call.channel_id}/variable")
    await send(http, sim, body_request, json_body={"variable": "A", "value": "b"})
    await send(http, sim, rest.set_variable(call.channel_id, "GATEKEEPER_RESULT", "ALLOW via ari"))
    first, second = sim.requests[mark:]
    assert (first.method, first.path, first.query, first.endpoint, first.status) == (
        "POST",
        f"/ari/channels/{call.channel_id}/variable",
        (),
        Endpoint.SET_VARIABLE,
        204,
    )
    assert json.loads(first.body) == {"variable": "A", "value": "b"}
    assert (
        second.raw_path
        == f"/ari/channels/{call.channel_id}/variable?variable=GATEKEEPER_RESULT&value=ALLOW%20via%20ari"
    )
    assert second.param("value") == "ALLOW via ari"
    assert first.time <= second.time
    assert sim.requests[0].endpoint is Endpoint.EVENTS
    assert sim.requests[0].status == 101


async def test_waiting_for_a_request_that_the_client_makes_later(
    sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream
) -> None:
    call = await started(sim, events)

    def is_continue(request: RecordedRequest) -> bool:
        return request.endpoint is Endpoint.CONTINUE

    waiter = asyncio.create_task(sim.wait_for_request(is_continue, since=len(sim.requests)))
    await send(http, sim, rest.continue_in_dialplan(call.channel_id))
    async with asyncio.timeout(STEP):
        seen = await waiter
    assert seen.path.endswith("/continue")


async def test_an_injected_error_fails_once_without_effect(
    sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream
) -> None:
    call = await started(sim, events)
    fault = sim.inject_fault(Endpoint.SET_VARIABLE, status=500, message="Allocation failed")
    reply = await send(http, sim, rest.set_variable(call.channel_id, "GATEKEEPER_RESULT", "ALLOW"))
    error = rest.parse_error(reply.status, reply.body, reason=reply.reason)
    assert (error.status, error.reason, error.message) == (500, "Internal Server Error", "Allocation failed")
    assert "GATEKEEPER_RESULT" not in call.variables
    assert fault.hits == 1
    assert sim.faults == []
    assert (await send(http, sim, rest.set_variable(call.channel_id, "GATEKEEPER_RESULT", "ALLOW"))).status == 204
    assert call.variables["GATEKEEPER_RESULT"] == "ALLOW"


async def test_an_applied_fault_acts_but_answers_an_error(
    sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream
) -> None:
    call = await started(sim, events)
    sim.inject_fault(
        Endpoint.CONTINUE, status=503, reason="Service Unavailable", apply=True, channel_id=call.channel_id
    )
    reply = await send(http, sim, rest.continue_in_dialplan(call.channel_id))
    assert reply.status == 503
    assert isinstance(await events.next(), StasisEnd)
    assert await finished(call) is CallOutcome.CONTINUED


async def test_a_held_request_times_out_at_the_client_and_the_call_stays(
    sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream
) -> None:
    call = await started(sim, events)
    hold = asyncio.Event()
    sim.inject_fault(Endpoint.SET_VARIABLE, status=None, hold=hold)
    request = rest.set_variable(call.channel_id, "GATEKEEPER_RESULT", "ALLOW")
    pending = asyncio.create_task(send(http, sim, request))
    async with asyncio.timeout(STEP):
        await sim.wait_for_request(lambda seen: seen.endpoint is Endpoint.SET_VARIABLE)
    assert not pending.done()
    assert "GATEKEEPER_RESULT" not in call.variables
    hold.set()
    async with asyncio.timeout(STEP):
        reply = await pending
    assert reply.status == 204
    assert call.variables["GATEKEEPER_RESULT"] == "ALLOW"


async def test_a_delayed_request_outlives_a_short_client_bound(
    sim: AriSimulator, http: aiohttp.ClientSession, events: EventStream
) -> None:
    call = await started(sim, events)
    sim.inject_fault(Endpoint.GET_VARIABLE, status=None, delay=30.0)
    url = URL(sim.url(rest.get_variable(call.channel_id, "GATEKEEPER_CAMPAIGN").target), encoded=True)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05), http.get(url, headers=AUTH):
            pass
    assert call.in_stasis  # closing the simulator releases the delayed handler


async def test_a_refused_websocket_upgrade(sim: AriSimulator, http: aiohttp.ClientSession) -> None:
    sim.inject_fault(Endpoint.EVENTS, status=503, reason="Service Unavailable")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(sim.events_url(), headers=AUTH)
    assert refused.value.status == 503
    assert not sim.is_connected()


async def test_events_can_follow_the_response(http: aiohttp.ClientSession) -> None:
    async with AriSimulator(event_timing=EventTiming.AFTER_RESPONSE) as sim:
        stream = await connect(http, sim)
        call = await sim.originate("0612345678")
        assert isinstance(await stream.next(), StasisStart)
        reply = await send(http, sim, rest.set_variable(call.channel_id, "GATEKEEPER_RESULT", "ALLOW"))
        assert reply.status == 204
        assert isinstance(await stream.next(), ChannelVarset)
        assert (await send(http, sim, rest.continue_in_dialplan(call.channel_id))).status == 204
        assert isinstance(await stream.next(), StasisEnd)
        assert await finished(call) is CallOutcome.CONTINUED
        await stream.close()


async def test_a_newer_socket_takes_over_the_app(sim: AriSimulator, http: aiohttp.ClientSession) -> None:
    old = await connect(http, sim)
    new = await connect(http, sim)
    await sim.originate("0612345678")
    assert isinstance(await new.next(), StasisStart)
    assert old.pending() == 0
    await old.close()
    assert sim.is_connected()
    await new.close()


def _never(_: object) -> bool:
    return False


async def test_waits_are_bounded_by_the_caller(sim: AriSimulator) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await sim.wait_for_request(_never)
