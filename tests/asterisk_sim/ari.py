"""A fake Asterisk 23.4.1 ARI server (REST + WebSocket) for integration tests.

Built from `../shared/asterisk-traces` (ari-rest.txt, ari-events.jsonl, ari-timeline.txt): the same
status lines, reason phrases, headers, JSON bodies (compact, keys in Asterisk's order) and event
sequences. Where the traces are silent, Asterisk's res/ari sources decide (400/404/409/422 texts).

It models the dialplan the traces were recorded with, so a finished call shows what Asterisk would do
next: its final channel variables (`STASISSTATUS`, `HANGUPCAUSE`, whatever the app set), its outcome and
the `GKTRACE` lines the dialplan would log (`SimCall.dialplan_log`)::

    [outbound-ari]
    exten => _X.,1,Stasis(gatekeeper,${EXTEN})
     same => n,Verbose(1,GKTRACE outbound-ari exten=${EXTEN} STASISSTATUS=.. GATEKEEPER_RESULT=..)
     same => n,Hangup()
    exten => h,1,Verbose(1,GKTRACE outbound-ari h-exten channel=.. STASISSTATUS=.. GATEKEEPER_RESULT=..
                          HANGUPCAUSE=..)
    [after-ari]   ; priorities 1 and 10 print "GKTRACE after-ari exten=.. priority=.. ...", then Hangup

Typical use::

    auth = {"Authorization": rest.basic_authorization("gk", "gkpass")}
    async with AriSimulator() as sim, aiohttp.ClientSession(headers=auth) as http:
        ws = await http.ws_connect(sim.events_url("gatekeeper"))
        async with asyncio.timeout(2):
            await sim.wait_connected("gatekeeper")
        call = await sim.originate("0612345678", variables={"GATEKEEPER_CAMPAIGN": "acme"})
        ...  # the code under test reacts to StasisStart
        async with asyncio.timeout(2):
            assert await call.wait_finished() is CallOutcome.CONTINUED
        assert call.variables["GATEKEEPER_RESULT"] == "ALLOW"

Behaviour taken from the traces:

- HTTP Basic auth (or `api_key=user:pass`); otherwise 401 with `WWW-Authenticate`.
- `Stasis()` while the app has no websocket fails at once (STASISSTATUS=FAILED, no queueing). A channel
  already in Stasis when the socket goes stays there; events meanwhile are dropped (`missed_events`);
  REST still works; after a reconnect nothing is replayed.
- Events are written to the websocket before the REST response (`EventTiming.AFTER_RESPONSE` flips
  that): the trace shows both orders, so a client must not rely on either.
- A channel that left Stasis is gone for every REST call (404).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Final, Self
from urllib.parse import unquote

from aiohttp import WSCloseCode, WSMsgType, web

from gatekeeper.ari import rest
from gatekeeper.ari.events import (
    ChannelDestroyedJson,
    ChannelDialplanJson,
    ChannelHangupRequestJson,
    ChannelJson,
    ChannelStateChangeJson,
    ChannelVarsetJson,
    EventJson,
    StasisEndJson,
    StasisStartJson,
)

ASTERISK_VERSION: Final = "23.4.1"
ASTERISK_ID: Final = "02:fc:00:00:00:01"
AUTH_REALM: Final = "Asterisk REST Interface"
STASIS_CONTEXT: Final = "outbound-ari"
AFTER_CONTEXT: Final = "after-ari"

_HEADERS: Final = {"Server": f"Asterisk/{ASTERISK_VERSION}", "Cache-Control": "no-cache, no-store"}

# ast_cause2str() texts (main/channel.c); anything else is "Unknown".
_CAUSE_TEXT: Final = {
    1: "Unallocated (unassigned) number",
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    21: "Call Rejected",
    26: "Answered elsewhere",
    27: "Destination out of order",
    28: "Invalid number format",
    31: "Normal, unspecified",
    34: "Circuit/channel congestion",
    38: "Network out of order",
    58: "Bearer capability not available",
    127: "Interworking, unspecified",
}

# DELETE ?reason=... (res/ari/resource_channels.c convert_reason_to_hangup_code)
_REASON_CAUSE: Final = {
    "normal": 16,
    "busy": 17,
    "congestion": 34,
    "no_answer": 19,
    "timeout": 18,
    "rejected": 21,
    "unallocated": 1,
    "normal_unspecified": 31,
    "number_incomplete": 28,
    "codec_mismatch": 58,
    "interworking": 127,
    "failure": 38,
    "answered_elsewhere": 26,
}

_SOFTHANGUP_EXPLICIT: Final = 32  # the `cause` of ChannelHangupRequest after an ARI DELETE
_FAR_END_CAUSE: Final = 16
_FAR_END_HANGUPCAUSE: Final = 0  # what the ;2 Local half's h extension saw in call G
_DIALPLAN_HANGUP_CAUSE: Final = 16  # Hangup() in the dialplan

# Safety net for the wait_* helpers, so a broken test fails instead of hanging; tests bound their waits
# more tightly with asyncio.timeout.
WAIT_LIMIT: Final = 10.0


class CallOutcome(StrEnum):
    IN_STASIS = "in-stasis"
    STASIS_FAILED = "stasis-failed"  # no websocket: STASISSTATUS=FAILED, dialplan went on at priority 2
    CONTINUED = "continued"  # POST continue
    HUNG_UP = "hung-up"  # DELETE by the app
    FAR_END_HANGUP = "far-end-hangup"  # the other side hung up while in Stasis


class Endpoint(StrEnum):
    EVENTS = "events"
    LIST_APPLICATIONS = "list-applications"
    GET_APPLICATION = "get-application"
    SUBSCRIBE = "subscribe"
    ASTERISK_INFO = "asterisk-info"
    LIST_CHANNELS = "list-channels"
    GET_CHANNEL = "get-channel"
    HANGUP = "hangup"
    CONTINUE = "continue"
    ANSWER = "answer"
    GET_VARIABLE = "get-variable"
    SET_VARIABLE = "set-variable"


class EventTiming(StrEnum):
    BEFORE_RESPONSE = "before-response"
    AFTER_RESPONSE = "after-response"


# (method, path segments with "*" for the one variable segment, endpoint)
_ROUTES: Final[tuple[tuple[str, tuple[str, ...], Endpoint], ...]] = (
    ("GET", ("ari", "events"), Endpoint.EVENTS),
    ("GET", ("ari", "applications"), Endpoint.LIST_APPLICATIONS),
    ("GET", ("ari", "applications", "*"), Endpoint.GET_APPLICATION),
    ("POST", ("ari", "applications", "*", "subscription"), Endpoint.SUBSCRIBE),
    ("GET", ("ari", "asterisk", "info"), Endpoint.ASTERISK_INFO),
    ("GET", ("ari", "channels"), Endpoint.LIST_CHANNELS),
    ("GET", ("ari", "channels", "*"), Endpoint.GET_CHANNEL),
    ("DELETE", ("ari", "channels", "*"), Endpoint.HANGUP),
    ("POST", ("ari", "channels", "*", "continue"), Endpoint.CONTINUE),
    ("POST", ("ari", "channels", "*", "answer"), Endpoint.ANSWER),
    ("GET", ("ari", "channels", "*", "variable"), Endpoint.GET_VARIABLE),
    ("POST", ("ari", "channels", "*", "variable"), Endpoint.SET_VARIABLE),
)

_LEADING_INT: Final = re.compile(r"\s*([+-]?\d+)")


@dataclass(frozen=True, slots=True)
class DialplanTarget:
    context: str
    exten: str
    priority: int


@dataclass(slots=True)
class RecordedRequest:
    """One HTTP request as received. `status` is filled in once the response is decided (101 for an
    accepted websocket)."""

    method: str
    path: str  # decoded, without the query string
    raw_path: str  # as sent, with the query string
    query: tuple[tuple[str, str], ...]
    body: bytes
    time: float  # event-loop time at arrival
    endpoint: Endpoint | None
    authorized: bool
    status: int | None = None

    def param(self, name: str) -> str | None:
        values = [value for key, value in self.query if key == name]
        return values[-1] if values else None


@dataclass(frozen=True, slots=True)
class SentEvent:
    """An event the simulator emitted; `delivered` is False when the app had no websocket then
    (Asterisk logs "Inactive Stasis app 'X' missed message")."""

    app: str
    type: str
    channel_id: str | None
    text: str
    delivered: bool


@dataclass(slots=True)
class Fault:
    """Makes `endpoint` misbehave for the next `times` requests (None: until removed). After `delay`
    seconds and/or once `hold` is set, it answers `status` with an ARI error body; `status=None` only
    delays. `apply=True` performs the request (state change and events) before answering the error,
    like a response lost after Asterisk acted. `channel_id` limits it to one channel."""

    endpoint: Endpoint
    status: int | None = 500
    reason: str = "Internal Server Error"
    message: str = "Internal Server Error"
    delay: float = 0.0
    hold: asyncio.Event | None = None
    times: int | None = 1
    apply: bool = False
    channel_id: str | None = None
    hits: int = 0


class SimCall:
    """One call sent into `Stasis(app, args...)` by the simulated dialplan. Read its attributes; the
    simulator changes them."""

    def __init__(
        self,
        *,
        channel_id: str,
        name: str,
        number: str,
        app: str,
        args: tuple[str, ...],
        caller_number: str,
        caller_name: str,
        accountcode: str,
        language: str,
        context: str,
        creationtime: str,
        variables: Mapping[str, str],
    ) -> None:
        self.channel_id = channel_id
        self.name = name
        self.number = number
        self.app = app
        self.args = args
        self.caller_number = caller_number
        self.caller_name = caller_name
        self.accountcode = accountcode
        self.language = language
        self.creationtime = creationtime
        self.state = "Ring"
        self.context = context
        self.exten = number
        self.priority = 1
        self.app_name = "Stasis"
        self.app_data = ",".join((app, *args))
        self.variables: dict[str, str] = dict(variables)
        self.outcome = CallOutcome.IN_STASIS
        self.continued_to: DialplanTarget | None = None
        self.hangup_cause: int | None = None  # HANGUPCAUSE as the dialplan's h extension sees it
        self.stasis_error: str | None = None  # the Asterisk log line when Stasis() failed
        self.dialplan_log: list[str] = []  # GKTRACE lines the modelled dialplan logs
        self.subscribed = False  # explicit POST /applications/{app}/subscription
        self._done = asyncio.Event()

    def __repr__(self) -> str:
        return f"SimCall({self.channel_id!r}, {self.number!r}, {self.outcome.value})"

    @property
    def in_stasis(self) -> bool:
        return self.outcome is CallOutcome.IN_STASIS

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    @property
    def gatekeeper_result(self) -> str:
        """`${GATEKEEPER_RESULT}` as the dialplan reads it (empty if unset)."""
        return self.variables.get("GATEKEEPER_RESULT", "")

    @property
    def would_dial(self) -> bool:
        """The fail-closed dialplan of DESIGN.md dials only after a continue with GATEKEEPER_RESULT=ALLOW."""
        return self.outcome is CallOutcome.CONTINUED and self.gatekeeper_result == "ALLOW"

    async def wait_finished(self) -> CallOutcome:
        """Wait until the call left Stasis (or never got in). Bound it with `asyncio.timeout`; it gives up
        with TimeoutError after WAIT_LIMIT seconds in any case."""
        async with asyncio.timeout(WAIT_LIMIT):
            await self._done.wait()
        return self.outcome

    def snapshot(self) -> ChannelJson:
        return {
            "id": self.channel_id,
            "name": self.name,
            "state": self.state,
            "protocol_id": "",
            "caller": {"name": self.caller_name, "number": self.caller_number},
            "connected": {"name": "", "number": ""},
            "accountcode": self.accountcode,
            "dialplan": {
                "context": self.context,
                "exten": self.exten,
                "priority": self.priority,
                "app_name": self.app_name,
                "app_data": self.app_data,
            },
            "creationtime": self.creationtime,
            "language": self.language,
        }

    def _at(self, context: str, exten: str, priority: int, app_name: str = "", app_data: str = "") -> None:
        self.context, self.exten, self.priority = context, exten, priority
        self.app_name, self.app_data = app_name, app_data

    def _trace_vars(self) -> str:
        return f"STASISSTATUS={self.variables.get('STASISSTATUS', '')} GATEKEEPER_RESULT={self.gatekeeper_result}"

    def _h_line(self) -> str:
        return (
            f"GKTRACE {STASIS_CONTEXT} h-exten channel={self.name} {self._trace_vars()} "
            f"HANGUPCAUSE={self.variables.get('HANGUPCAUSE', '')}"
        )

    def _hang_up(self, cause: int) -> None:
        """Hangup with `cause`; [outbound-ari] has an h extension that logs."""
        self.hangup_cause = cause
        self.variables["HANGUPCAUSE"] = str(cause)
        if self.context == STASIS_CONTEXT:
            self.dialplan_log.append(self._h_line())


@dataclass(slots=True)
class _Connection:
    ws: web.WebSocketResponse
    request: web.Request
    apps: tuple[str, ...]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(slots=True)
class _App:
    name: str
    connection: _Connection | None = None
    subscriptions: list[str] = field(default_factory=list)  # explicit channel subscriptions


@dataclass(frozen=True, slots=True)
class _Pending:
    app: str
    payload: EventJson
    channel_id: str | None


@dataclass(slots=True)
class _Reply:
    response: web.Response
    events: list[_Pending] = field(default_factory=list)
    finished: list[SimCall] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Ctx:
    request: web.Request
    params: Mapping[str, str]
    resource: str  # the variable path segment (channel id or application name), "" if none


class _BadBody(Exception):
    pass


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _json_response(
    status: int, reason: str | None, payload: object, extra: Mapping[str, str] | None = None
) -> web.Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {**_HEADERS, **(extra or {}), "Content-type": "application/json"}
    return web.Response(status=status, reason=reason, body=body, headers=headers)


def _error(status: int, reason: str, message: str) -> web.Response:
    return _json_response(status, reason, {"message": message})


def _no_content() -> web.Response:
    return web.Response(status=204, headers=_HEADERS)


def _channel_not_found() -> web.Response:
    return _error(404, "Not Found", "Channel not found")


class AriSimulator:
    """The fake ARI server. Use as `async with AriSimulator() as sim:`; it listens on 127.0.0.1 on a
    free port (`base_url`)."""

    def __init__(
        self,
        *,
        username: str = "gk",
        password: str = "gkpass",
        host: str = "127.0.0.1",
        port: int = 0,
        asterisk_id: str = ASTERISK_ID,
        event_timing: EventTiming = EventTiming.BEFORE_RESPONSE,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.username = username
        self.password = password
        self.host = host
        self.port = port
        self.asterisk_id = asterisk_id
        self.event_timing = event_timing
        self.clock = clock
        self.requests: list[RecordedRequest] = []
        self.events: list[SentEvent] = []
        self.calls: dict[str, SimCall] = {}
        self.faults: list[Fault] = []
        self._apps: dict[str, _App] = {}
        self._connections: list[_Connection] = []
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._sequence = 0
        self._local_index = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._entry)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        _host, self.port = self._runner.addresses[0][:2]

    async def close(self) -> None:
        self._closing.set()
        for connection in list(self._connections):
            await self._disconnect(connection, abrupt=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, target: str) -> str:
        return self.base_url + target

    def events_url(self, app: str = "gatekeeper", *, api_key: bool = False) -> str:
        """The events websocket URL; with `api_key` the credentials ride in the URL, as in the trace."""
        url = rest.events_url(self.base_url, app)
        return url + f"&api_key={self.username}:{self.password}" if api_key else url

    # -- test controls -----------------------------------------------------------------------------

    def is_connected(self, app: str = "gatekeeper") -> bool:
        state = self._apps.get(app)
        return state is not None and state.connection is not None

    @property
    def missed_events(self) -> list[SentEvent]:
        return [event for event in self.events if not event.delivered]

    def events_for(self, call: SimCall) -> list[SentEvent]:
        return [event for event in self.events if event.channel_id == call.channel_id]

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate()` holds; it is re-checked after every request and state change. Like
        every wait here, bound it with `asyncio.timeout`; it gives up after WAIT_LIMIT seconds anyway."""
        async with asyncio.timeout(WAIT_LIMIT), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_connected(self, app: str = "gatekeeper") -> None:
        await self.wait_until(lambda: self.is_connected(app))

    async def wait_disconnected(self, app: str = "gatekeeper") -> None:
        await self.wait_until(lambda: not self.is_connected(app))

    async def wait_for_request(
        self, predicate: Callable[[RecordedRequest], bool], *, since: int = 0
    ) -> RecordedRequest:
        """The first request from index `since` on that matches (responded or not)."""
        found: list[RecordedRequest] = []

        def match() -> bool:
            found[:] = [request for request in self.requests[since:] if predicate(request)][:1]
            return bool(found)

        await self.wait_until(match)
        return found[0]

    def inject_fault(
        self,
        endpoint: Endpoint,
        *,
        status: int | None = 500,
        reason: str = "Internal Server Error",
        message: str = "Internal Server Error",
        delay: float = 0.0,
        hold: asyncio.Event | None = None,
        times: int | None = 1,
        apply: bool = False,
        channel_id: str | None = None,
    ) -> Fault:
        fault = Fault(endpoint, status, reason, message, delay, hold, times, apply, channel_id)
        self.faults.append(fault)
        return fault

    async def originate(
        self,
        number: str,
        *,
        variables: Mapping[str, str] | None = None,
        args: Sequence[str] | None = None,
        caller: str = "",
        caller_name: str = "",
        app: str = "gatekeeper",
        accountcode: str = "",
        language: str = "en",
        channel_id: str | None = None,
        channel_name: str | None = None,
    ) -> SimCall:
        """Place a call into `[outbound-ari]`, `Stasis(app, *args)` (args default: the number). With a
        websocket for `app` it enters Stasis (StasisStart); without, it fails at once like Asterisk:
        STASISSTATUS=FAILED and the dialplan goes on. Returns at once in both cases."""
        now = self.clock()
        self._sequence += 2  # a Local channel pair takes two uniqueids; the ;2 half has the second
        self._local_index += 1
        call = SimCall(
            channel_id=channel_id or f"{int(now.timestamp())}.{self._sequence - 1}",
            name=channel_name or f"Local/{number}@{STASIS_CONTEXT}-{self._local_index:08x};2",
            number=number,
            app=app,
            args=tuple(args) if args is not None else (number,),
            caller_number=caller,
            caller_name=caller_name,
            accountcode=accountcode,
            language=language,
            context=STASIS_CONTEXT,
            creationtime=self._format(now),
            variables=variables or {},
        )
        if call.channel_id in self.calls:
            raise ValueError(f"channel id {call.channel_id} already used")
        inactive = any(other.in_stasis and other.app == app for other in self.calls.values())
        self.calls[call.channel_id] = call
        if self.is_connected(app):
            start: StasisStartJson = {
                "type": "StasisStart",
                "timestamp": self._format(now),
                "args": list(call.args),
                "channel": call.snapshot(),
                "asterisk_id": self.asterisk_id,
                "application": app,
            }
            await self._send(_Pending(app, start, call.channel_id))
        else:  # a deactivated app (websocket gone, channels still inside) is "not active"
            call.stasis_error = (
                f"ERROR res_stasis.c: Stasis app '{app}' not active"
                if inactive
                else f"WARNING app_stasis.c: Stasis app '{app}' doesn't exist"
            )
            call.outcome = CallOutcome.STASIS_FAILED
            call.variables["STASISSTATUS"] = "FAILED"
            call._at(STASIS_CONTEXT, number, 2, "Verbose")
            call.dialplan_log.append(f"GKTRACE {STASIS_CONTEXT} exten={number} {call._trace_vars()}")
            call._hang_up(_DIALPLAN_HANGUP_CAUSE)
            call._done.set()
        await self._notify()
        return call

    async def far_end_hangup(self, call: SimCall) -> None:
        """The other party hangs up while the channel is in Stasis (call G of the trace)."""
        if not call.in_stasis:
            raise ValueError(f"{call!r} is not in Stasis")
        request: ChannelHangupRequestJson = {
            "cause": _FAR_END_CAUSE,
            "type": "ChannelHangupRequest",
            "timestamp": self._timestamp(),
            "channel": call.snapshot(),
            "asterisk_id": self.asterisk_id,
            "application": call.app,
        }
        events = [_Pending(call.app, request, call.channel_id)]
        events += self._leave_stasis(call, CallOutcome.FAR_END_HANGUP, cause=_FAR_END_HANGUPCAUSE)
        await self._send_all(events)
        call._done.set()
        await self._notify()

    async def drop_websocket(self, app: str = "gatekeeper", *, abrupt: bool = False) -> None:
        """Cut the app's websocket from the server side: a close frame (1001), or with `abrupt` a TCP
        abort. The app is inactive from this call on; channels in Stasis stay there."""
        state = self._apps.get(app)
        if state is None or state.connection is None:
            raise LookupError(f"no websocket for app {app!r}")
        await self._disconnect(state.connection, abrupt=abrupt)

    # -- HTTP entry --------------------------------------------------------------------------------

    async def _entry(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.raw_path
        segments = tuple(unquote(part) for part in raw_path.partition("?")[0].split("/")[1:])
        endpoint, resource, allowed = self._route(request.method, segments)
        record = RecordedRequest(
            method=request.method,
            path="/" + "/".join(segments),
            raw_path=raw_path,
            query=tuple(request.query.items()),
            body=await request.read(),
            time=asyncio.get_running_loop().time(),
            endpoint=endpoint,
            authorized=self._authorized(request),
        )
        self.requests.append(record)
        await self._notify()
        response = await self._serve(request, record, endpoint, resource, allowed)
        if record.status is None:
            record.status = response.status
            await self._notify()
        return response

    async def _serve(
        self,
        request: web.Request,
        record: RecordedRequest,
        endpoint: Endpoint | None,
        resource: str,
        allowed: bool,
    ) -> web.StreamResponse:
        if not record.authorized:
            challenge = {"WWW-Authenticate": f'Basic realm="{AUTH_REALM}"'}
            return _json_response(401, "Unauthorized", {"message": "Authentication required"}, challenge)
        if endpoint is None:
            return _error(405, "Method Not Allowed", "Invalid method") if allowed else _resource_not_found()
        fault = self._take_fault(endpoint, resource)
        if fault is not None:
            await self._wait_out(fault)
            if fault.status is not None:
                if fault.apply and endpoint is not Endpoint.EVENTS:
                    reply = self._handle(request, endpoint, resource, record.body)
                    await self._send_all(reply.events)
                    self._finish(reply)
                return _error(fault.status, fault.reason, fault.message)
        if endpoint is Endpoint.EVENTS:
            return await self._events(request, record)
        reply = self._handle(request, endpoint, resource, record.body)
        if self.event_timing is EventTiming.AFTER_RESPONSE and reply.events:
            await reply.response.prepare(request)
            await reply.response.write_eof()
        await self._send_all(reply.events)
        self._finish(reply)
        await self._notify()
        return reply.response

    @staticmethod
    def _route(method: str, segments: tuple[str, ...]) -> tuple[Endpoint | None, str, bool]:
        """(endpoint, variable segment, whether the path exists for another method)."""
        path_exists = False
        for route_method, pattern, endpoint in _ROUTES:
            if len(pattern) != len(segments):
                continue
            if all(part in ("*", segment) for part, segment in zip(pattern, segments, strict=True)):
                if route_method == method:
                    resource = next((seg for part, seg in zip(pattern, segments, strict=True) if part == "*"), "")
                    return endpoint, resource, True
                path_exists = True
        return None, "", path_exists

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "basic":
                return False
            try:
                decoded = base64.b64decode(token.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
        else:
            api_key = request.query.get("api_key")
            if api_key is None:
                return False
            decoded = api_key
        user, colon, password = decoded.partition(":")
        return bool(colon) and user == self.username and password == self.password

    def _take_fault(self, endpoint: Endpoint, resource: str) -> Fault | None:
        for fault in self.faults:
            if fault.endpoint is endpoint and fault.channel_id in (None, resource):
                fault.hits += 1
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    async def _wait_out(self, fault: Fault) -> None:
        if fault.hold is not None:
            await self._pause(fault.hold, None)
        if fault.delay > 0:
            await self._pause(None, fault.delay)

    async def _pause(self, until: asyncio.Event | None, seconds: float | None) -> None:
        """Wait for `until` or `seconds`; the server closing ends every wait."""
        waiters = [asyncio.ensure_future(self._closing.wait())]
        if until is not None:
            waiters.append(asyncio.ensure_future(until.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    def _handle(self, request: web.Request, endpoint: Endpoint, resource: str, body: bytes) -> _Reply:
        try:
            params = _params(request, body)
        except _BadBody:
            return _Reply(_error(400, "Bad Request", "Error parsing request body"))
        ctx = _Ctx(request, params, resource)
        handlers: Mapping[Endpoint, Callable[[_Ctx], _Reply]] = {
            Endpoint.LIST_APPLICATIONS: self._list_applications,
            Endpoint.GET_APPLICATION: self._get_application,
            Endpoint.SUBSCRIBE: self._subscribe,
            Endpoint.ASTERISK_INFO: self._asterisk_info,
            Endpoint.LIST_CHANNELS: self._list_channels,
            Endpoint.GET_CHANNEL: self._get_channel,
            Endpoint.HANGUP: self._hangup,
            Endpoint.CONTINUE: self._continue,
            Endpoint.ANSWER: self._answer,
            Endpoint.GET_VARIABLE: self._get_variable,
            Endpoint.SET_VARIABLE: self._set_variable,
        }
        return handlers[endpoint](ctx)

    # -- websocket ---------------------------------------------------------------------------------

    async def _events(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        apps = tuple(name for value in request.query.getall("app", []) for name in value.split(",") if name)
        if not apps:
            return web.Response(status=400, reason="Bad Request", text="Missing param 'app'", headers=_HEADERS)
        ws = web.WebSocketResponse(timeout=2.0, autoping=True)
        if not ws.can_prepare(request).ok:
            return web.Response(status=426, reason="Upgrade Required", headers=_HEADERS)
        await ws.prepare(request)
        record.status = 101
        connection = _Connection(ws, request, apps)
        self._connections.append(connection)
        for name in apps:
            self._apps.setdefault(name, _App(name)).connection = connection  # a newer socket takes over
        await self._notify()
        try:
            while True:  # ARI ignores what the client sends
                message = await ws.receive()
                if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
        finally:
            self._detach(connection)
            await self._notify()
        return ws

    def _detach(self, connection: _Connection) -> None:
        for name in connection.apps:
            state = self._apps.get(name)
            if state is not None and state.connection is connection:
                state.connection = None
        if connection in self._connections:
            self._connections.remove(connection)

    async def _disconnect(self, connection: _Connection, *, abrupt: bool) -> None:
        self._detach(connection)
        await self._notify()
        if abrupt:
            transport = connection.request.transport
            if transport is not None:
                transport.abort()
        else:
            await connection.ws.close(code=WSCloseCode.GOING_AWAY)

    async def _send(self, pending: _Pending) -> None:
        text = json.dumps(pending.payload, separators=(",", ":"), ensure_ascii=False)
        state = self._apps.get(pending.app)
        connection = state.connection if state is not None else None
        delivered = False
        if connection is not None and not connection.ws.closed:
            async with connection.lock:
                try:
                    await connection.ws.send_str(text)
                    delivered = True
                except (ConnectionError, RuntimeError):
                    delivered = False
        self.events.append(SentEvent(pending.app, pending.payload["type"], pending.channel_id, text, delivered))

    async def _send_all(self, events: Sequence[_Pending]) -> None:
        for pending in events:
            await self._send(pending)

    @staticmethod
    def _finish(reply: _Reply) -> None:
        for call in reply.finished:
            call._done.set()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- state helpers -----------------------------------------------------------------------------

    @staticmethod
    def _format(moment: datetime) -> str:
        moment = moment.astimezone(UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"

    def _timestamp(self) -> str:
        return self._format(self.clock())

    def _stasis_call(self, channel_id: str) -> SimCall | None:
        call = self.calls.get(channel_id)
        return call if call is not None and call.in_stasis else None

    def _app_exists(self, name: str) -> bool:
        state = self._apps.get(name)
        if state is None:
            return False
        return state.connection is not None or bool(self._channel_ids(state))

    def _channel_ids(self, state: _App) -> list[str]:
        ids = [call.channel_id for call in self.calls.values() if call.in_stasis and call.app == state.name]
        return ids + [channel_id for channel_id in state.subscriptions if channel_id not in ids]

    def _application_json(self, state: _App) -> dict[str, object]:
        return {
            "name": state.name,
            "channel_ids": self._channel_ids(state),
            "bridge_ids": [],
            "endpoint_ids": [],
            "device_names": [],
            "events_allowed": [],
            "events_disallowed": [],
        }

    def _leave_stasis(self, call: SimCall, outcome: CallOutcome, *, cause: int | None = None) -> list[_Pending]:
        """StasisEnd, then the dialplan after Stasis(); the events an explicit subscription adds. Sets
        the outcome and final variables; the caller marks the call done after sending."""
        end: StasisEndJson = {
            "type": "StasisEnd",
            "timestamp": self._timestamp(),
            "channel": call.snapshot(),
            "asterisk_id": self.asterisk_id,
            "application": call.app,
        }
        events = [_Pending(call.app, end, call.channel_id)]
        call.outcome = outcome
        call.variables["STASISSTATUS"] = "SUCCESS"
        varset: ChannelVarsetJson = {
            "variable": "STASISSTATUS",
            "value": "SUCCESS",
            "type": "ChannelVarset",
            "timestamp": self._timestamp(),
            "channel": call.snapshot(),
            "asterisk_id": self.asterisk_id,
            "application": call.app,
        }
        if outcome is CallOutcome.CONTINUED:
            self._run_dialplan(call)
            if call.subscribed:
                events.append(_Pending(call.app, varset, call.channel_id))
                events.append(self._destroyed(call))
        else:
            assert cause is not None
            call._hang_up(cause)
            if call.subscribed:
                # call F of the trace: after StasisEnd the h extension runs, then the channel goes
                request: ChannelHangupRequestJson = {
                    "cause": _DIALPLAN_HANGUP_CAUSE,
                    "soft": True,
                    "type": "ChannelHangupRequest",
                    "timestamp": self._timestamp(),
                    "channel": call.snapshot(),
                    "asterisk_id": self.asterisk_id,
                    "application": call.app,
                }
                h_data = f"1,{call._h_line()}"
                call._at(STASIS_CONTEXT, "h", 1, "Verbose", h_data)
                dialplan: ChannelDialplanJson = {
                    "type": "ChannelDialplan",
                    "timestamp": self._timestamp(),
                    "dialplan_app": "Verbose",
                    "dialplan_app_data": h_data,
                    "channel": call.snapshot(),
                    "asterisk_id": self.asterisk_id,
                    "application": call.app,
                }
                call._at(STASIS_CONTEXT, "h", 2)
                events.append(_Pending(call.app, varset, call.channel_id))
                if outcome is CallOutcome.HUNG_UP:  # F: the soft hangup the DELETE left pending
                    events.append(_Pending(call.app, request, call.channel_id))
                events += [_Pending(call.app, dialplan, call.channel_id), self._destroyed(call)]
        for state in self._apps.values():
            if call.channel_id in state.subscriptions:
                state.subscriptions.remove(call.channel_id)
        return events

    def _destroyed(self, call: SimCall) -> _Pending:
        cause = call.hangup_cause if call.hangup_cause is not None else _DIALPLAN_HANGUP_CAUSE
        destroyed: ChannelDestroyedJson = {
            "type": "ChannelDestroyed",
            "timestamp": self._timestamp(),
            "cause": cause,
            "cause_txt": _CAUSE_TEXT.get(cause, "Unknown"),
            "channel": call.snapshot(),
            "asterisk_id": self.asterisk_id,
            "application": call.app,
        }
        return _Pending(call.app, destroyed, call.channel_id)

    @staticmethod
    def _run_dialplan(call: SimCall) -> None:
        """The modelled dialplan from `continued_to` on."""
        target = call.continued_to
        assert target is not None
        if target.context == STASIS_CONTEXT and target.priority >= 2:
            if target.priority == 2:
                call._at(STASIS_CONTEXT, target.exten, 2, "Verbose")
                call.dialplan_log.append(f"GKTRACE {STASIS_CONTEXT} exten={target.exten} {call._trace_vars()}")
            call._at(STASIS_CONTEXT, target.exten, 3, "Hangup")
            call._hang_up(_DIALPLAN_HANGUP_CAUSE)
        elif target.context == AFTER_CONTEXT:
            call._at(AFTER_CONTEXT, target.exten, target.priority, "Verbose")
            if target.priority in (1, 10):
                call.dialplan_log.append(
                    f"GKTRACE {AFTER_CONTEXT} exten={target.exten} priority={target.priority} {call._trace_vars()}"
                )
            call._hang_up(_DIALPLAN_HANGUP_CAUSE)
        else:  # a context the model does not know: only the target is recorded
            call._at(target.context, target.exten, target.priority)

    # -- REST handlers (synchronous: state changes only; events are sent by _serve) ------------------

    def _list_applications(self, ctx: _Ctx) -> _Reply:
        apps = [self._application_json(state) for state in self._apps.values() if self._app_exists(state.name)]
        return _Reply(_json_response(200, None, apps))

    def _get_application(self, ctx: _Ctx) -> _Reply:
        if not self._app_exists(ctx.resource):
            return _Reply(_error(404, "Not Found", "Application not found"))
        return _Reply(_json_response(200, None, self._application_json(self._apps[ctx.resource])))

    def _subscribe(self, ctx: _Ctx) -> _Reply:
        sources = [source for source in ctx.params.get("eventSource", "").split(",") if source]
        if not sources:
            return _Reply(_error(400, "Bad Request", "Missing parameter eventSource"))
        if not self._app_exists(ctx.resource):
            return _Reply(_error(404, "Not Found", "Application not found"))
        state = self._apps[ctx.resource]
        channel_ids: list[str] = []
        for source in sources:
            scheme, _, name = source.partition(":")
            if scheme not in ("channel", "bridge", "endpoint", "deviceState"):
                return _Reply(_error(400, "Bad Request", "Invalid event source URI scheme"))
            call = self.calls.get(name) if scheme == "channel" else None
            if call is None or call.finished:
                return _Reply(_error(422, "Unprocessable Entity", "Event source does not exist"))
            channel_ids.append(name)
        for channel_id in channel_ids:
            self.calls[channel_id].subscribed = True
            if channel_id not in state.subscriptions:
                state.subscriptions.append(channel_id)
        return _Reply(_json_response(200, None, self._application_json(state)))

    def _asterisk_info(self, ctx: _Ctx) -> _Reply:
        info: dict[str, object] = {
            "build": {
                "os": "Linux",
                "kernel": "6.18.44-fc-v857",
                "machine": "x86_64",
                "options": "OPTIONAL_API",
                "date": "2026-11-28 09:53:32 UTC",
                "user": "root",
            },
            "system": {"version": ASTERISK_VERSION, "entity_id": self.asterisk_id},
        }
        only = [part for part in ctx.params.get("only", "").split(",") if part]
        if only:
            info = {key: value for key, value in info.items() if key in only}
        return _Reply(_json_response(200, None, info))

    def _list_channels(self, ctx: _Ctx) -> _Reply:
        channels = [call.snapshot() for call in self.calls.values() if call.in_stasis]
        return _Reply(_json_response(200, None, channels))

    def _get_channel(self, ctx: _Ctx) -> _Reply:
        call = self._stasis_call(ctx.resource)
        if call is None:
            return _Reply(_channel_not_found())
        return _Reply(_json_response(200, None, call.snapshot()))

    def _hangup(self, ctx: _Ctx) -> _Reply:
        call = self._stasis_call(ctx.resource)
        if call is None:
            return _Reply(_channel_not_found())
        reason, reason_code = ctx.params.get("reason", ""), ctx.params.get("reason_code", "")
        if reason and reason_code:
            return _Reply(_error(400, "Bad Request", "The reason and reason_code can't both be specified"))
        if reason_code:
            match = _LEADING_INT.match(reason_code)  # sscanf("%30d")
            if match is None:
                return _Reply(_error(400, "Invalid Reason Code", "Invalid reason for hangup reason code provided"))
            cause = int(match.group(1))
        elif reason:
            if reason not in _REASON_CAUSE:
                return _Reply(_error(400, "Invalid Reason", "Invalid reason for hangup reason provided"))
            cause = _REASON_CAUSE[reason]
        else:
            cause = _DIALPLAN_HANGUP_CAUSE
        request: ChannelHangupRequestJson = {
            "cause": _SOFTHANGUP_EXPLICIT,
            "soft": True,
            "type": "ChannelHangupRequest",
            "timestamp": self._timestamp(),
            "channel": call.snapshot(),
            "asterisk_id": self.asterisk_id,
            "application": call.app,
        }
        events = [_Pending(call.app, request, call.channel_id)]
        events += self._leave_stasis(call, CallOutcome.HUNG_UP, cause=cause)
        return _Reply(_no_content(), events, [call])

    def _continue(self, ctx: _Ctx) -> _Reply:
        call = self._stasis_call(ctx.resource)
        if call is None:
            return _Reply(_channel_not_found())
        context_arg, extension_arg = ctx.params.get("context", ""), ctx.params.get("extension", "")
        label = ctx.params.get("label", "")
        priority_arg = _atoi(ctx.params.get("priority", ""))
        if context_arg:
            context, exten = context_arg, extension_arg or "s"
        else:
            context, exten = call.context, extension_arg or call.exten
        if label:
            match = _LEADING_INT.match(label)
            if match is None:  # named labels are not modelled
                return _Reply(_error(404, "Not Found", "Requested label can not be found"))
            priority = int(match.group(1))
            if priority == 0:
                return _Reply(_error(400, "Bad Request", "Requested priority is illegal"))
        elif priority_arg:
            priority = priority_arg
        elif not context_arg and not extension_arg:
            priority = call.priority + 1  # no parameters: the next priority after Stasis()
        else:
            priority = 1
        call.continued_to = DialplanTarget(context, exten, priority)
        events = self._leave_stasis(call, CallOutcome.CONTINUED)
        return _Reply(_no_content(), events, [call])

    def _answer(self, ctx: _Ctx) -> _Reply:
        call = self._stasis_call(ctx.resource)
        if call is None:
            return _Reply(_channel_not_found())
        if call.state == "Up":
            return _Reply(_no_content())
        call.state = "Up"
        change: ChannelStateChangeJson = {
            "type": "ChannelStateChange",
            "timestamp": self._timestamp(),
            "channel": call.snapshot(),
            "asterisk_id": self.asterisk_id,
            "application": call.app,
        }
        return _Reply(_no_content(), [_Pending(call.app, change, call.channel_id)])

    def _get_variable(self, ctx: _Ctx) -> _Reply:
        variable = ctx.params.get("variable", "")
        if not variable:
            return _Reply(_error(400, "Bad Request", "Variable name is required"))
        call = self._stasis_call(ctx.resource)
        if call is None:  # this endpoint has its own wording (ast_ari_channels_get_channel_var)
            return _Reply(_error(404, "Channel Not Found", "Provided channel was not found"))
        if variable.endswith(")"):
            functions = {"CALLERID(num)": call.caller_number, "CALLERID(name)": call.caller_name}
            if variable not in functions:
                return _Reply(_error(500, "Error With Function", "Unable to read provided function"))
            return _Reply(_json_response(200, None, {"value": functions[variable]}))
        builtins = {
            "CHANNEL": call.name,
            "UNIQUEID": call.channel_id,
            "CONTEXT": call.context,
            "EXTEN": call.exten,
            "PRIORITY": str(call.priority),
        }
        value = call.variables.get(variable, builtins.get(variable))
        if value is None:
            return _Reply(_error(404, "Variable Not Found", "Provided variable was not found"))
        return _Reply(_json_response(200, None, {"value": value}))

    def _set_variable(self, ctx: _Ctx) -> _Reply:
        variable = ctx.params.get("variable", "")
        if not variable:
            return _Reply(_error(400, "Bad Request", "Variable name is required"))
        call = self._stasis_call(ctx.resource)
        if call is None:
            return _Reply(_channel_not_found())
        value = ctx.params.get("value")
        if value is None:  # no value: the variable is unset
            call.variables.pop(variable, None)
        else:
            call.variables[variable] = value
        varset: ChannelVarsetJson = {
            "variable": variable,
            "value": value or "",
            "type": "ChannelVarset",
            "timestamp": self._timestamp(),
            "channel": call.snapshot(),
            "asterisk_id": self.asterisk_id,
            "application": call.app,
        }
        return _Reply(_no_content(), [_Pending(call.app, varset, call.channel_id)])


def _resource_not_found() -> web.Response:
    return _error(404, "Not Found", "Resource not found")


def _atoi(text: str) -> int:
    match = _LEADING_INT.match(text)
    return int(match.group(1)) if match else 0


def _params(request: web.Request, body: bytes) -> dict[str, str]:
    """Query parameters (the last of a repeated name wins), overridden by a JSON body's fields, as
    Asterisk's generated argument parsers do."""
    params = {name: request.query.getall(name)[-1] for name in request.query}
    if body and request.content_type == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise _BadBody from None
        if isinstance(data, dict):
            for name, value in data.items():
                if isinstance(value, str):
                    params[name] = value
                elif isinstance(value, int) and not isinstance(value, bool):
                    params[name] = str(value)
    return params
