"""The ARI Stasis application: every call sent to `Stasis(gatekeeper,...)` leaves with a verdict.

One task keeps the events websocket (`/ari/events?app=NAME`) open, reconnecting with exponential backoff
and full jitter. Each `StasisStart` is handled in its own task, at most `AriTiming.max_calls` at once:

    read    the Stasis() arguments, then one concurrent batch of GETs on the channel:
            GATEKEEPER_CAMPAIGN (unless the arguments name the campaign), CALLERID(pres), CHANNEL(linkedid)
    decide  `Gate.check`
    act     POST GATEKEEPER_REASON and GATEKEEPER_DECISION_ID (together), then GATEKEEPER_RESULT, then
            POST continue (no parameters: the dialplan resumes after Stasis() and does its GotoIf), or
            for a block with `hangup_blocked`, DELETE ?reason_code=21

GATEKEEPER_RESULT goes last, so a failure part-way never leaves `ALLOW` without its reason and id.

Guarantees, the same on every path:

- Any error (REST error, timeout, a bug) ends in `continue` without `GATEKEEPER_RESULT=ALLOW` having been
  set by a failed attempt, so the fail-closed dialplan does not dial; if even `continue` fails, the
  channel is hung up. A 404 "channel not found" means the caller hung up: the handler ends quietly.
- Every REST call is bounded by `rest_timeout`, every call by `handler_timeout`.
- Handlers keep working through REST while the websocket is down (Asterisk keeps such channels in
  Stasis, and REST still works then). Asterisk never replays the events of a gap, so after every
  (re)connect the channels still in Stasis that no handler owns (e.g. after a gatekeeper restart) are
  adopted and decided like new ones.
- Logs carry channel ids, campaigns and masked numbers only; never a plaintext number (channel names
  contain the number, so they are not logged either).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final, TypeVar

import aiohttp
from yarl import URL

from gatekeeper.ari import rest
from gatekeeper.ari.events import AriEventError, Channel, StasisStart, UnknownEvent, parse_event
from gatekeeper.config import AriSettings, redact_url
from gatekeeper.contract import (
    GATEKEEPER_CAMPAIGN,
    GATEKEEPER_DECISION_ID,
    GATEKEEPER_REASON,
    GATEKEEPER_RESULT,
    ChannelResult,
    Source,
)
from gatekeeper.gate import CallRequest, EvidenceError, Gate
from gatekeeper.metrics import Metrics
from gatekeeper.record import DecisionRecord
from gatekeeper.service import Check

log = logging.getLogger(__name__)

T = TypeVar("T")

# Asterisk's 404 body for an unset variable; a gone channel gives "Provided channel was not found".
_VARIABLE_NOT_FOUND: Final = "Provided variable was not found"
# Sent to the old websocket when another client connects with the same application name.
_APPLICATION_REPLACED: Final = "ApplicationReplaced"


class ChannelVariable(StrEnum):
    """Channel variables and functions gatekeeper reads and sets (the first four: gatekeeper.contract)."""

    CAMPAIGN = GATEKEEPER_CAMPAIGN
    RESULT = GATEKEEPER_RESULT
    REASON = GATEKEEPER_REASON
    DECISION_ID = GATEKEEPER_DECISION_ID
    PRESENTATION = "CALLERID(pres)"
    LINKEDID = "CHANNEL(linkedid)"


class Outcome(StrEnum):
    """How a handler left the channel."""

    CONTINUED = "continued"
    HUNG_UP = "hung-up"
    GONE = "gone"  # the caller hung up first (404)
    STUCK = "stuck"  # neither continue nor hangup worked; Asterisk or the caller must end it


# `CALLERID(pres)` names (main/callerid.c) and the ITU presentation values Asterisk uses for them.
PRESENTATIONS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "allowed_not_screened": 0x00,
        "allowed_passed_screen": 0x01,
        "allowed_failed_screen": 0x02,
        "allowed": 0x03,
        "prohib_not_screened": 0x20,
        "prohib_passed_screen": 0x21,
        "prohib_failed_screen": 0x22,
        "prohib": 0x23,
        "unavailable": 0x43,
    }
)

_ARGUMENT_KEYS: Final = frozenset({"number", "campaign", "callback"})
_YES: Final = frozenset({"yes", "y", "true", "1", "on"})


@dataclass(frozen=True, slots=True)
class AriTiming:
    """Time budgets and limits of the ARI application (seconds unless stated)."""

    rest_timeout: float = 2.0  # one REST request, the websocket handshake too
    handler_timeout: float = 5.0  # read, decide and act for one call (the release after it has its own)
    stop_timeout: float = 5.0  # stop() waits this long for calls in flight, then cancels (and releases) them
    reconnect_initial: float = 0.1  # backoff cap after the first failure; doubles per failure
    reconnect_max: float = 30.0
    stable_after: float = 10.0  # a connection that lasted this long resets the backoff
    heartbeat: float = 10.0  # websocket ping interval: finds a dead TCP connection
    max_calls: int = 1000  # calls handled at once; further StasisStarts wait
    max_connections: int = 64  # REST connections to Asterisk (its http.conf sessionlimit defaults to 100)


DEFAULT_TIMING: Final = AriTiming()


@dataclass(frozen=True, slots=True)
class StasisArguments:
    """What `Stasis(app,...)` passed after the app name; None means "not given"."""

    number: str | None = None
    campaign: str | None = None
    callback: bool = False
    ignored: tuple[str, ...] = ()  # names of key=value arguments gatekeeper does not know


@dataclass(frozen=True, slots=True)
class ChannelReadings:
    """The results of the batch of GETs (None: unset or unreadable)."""

    campaign: str | None
    presentation: str | None
    linkedid: str | None


# ---------------------------------------------------------------------------------------------------
# Pure helpers


def parse_arguments(args: Sequence[str]) -> StasisArguments:
    """`NUMBER`, `NUMBER,CAMPAIGN`, or `key=value` arguments (`campaign=`, `number=`, `callback=yes`),
    which may be mixed with positional ones. Empty values count as not given."""
    positional: list[str] = []
    named: dict[str, str] = {}
    ignored: list[str] = []
    for arg in args:
        key, equals, value = arg.partition("=")
        if not equals:
            positional.append(arg.strip())
            continue
        key = key.strip().lower()
        if key in _ARGUMENT_KEYS:
            named[key] = value.strip()
        else:
            ignored.append(key)
    number = named.get("number") or (positional[0] if positional else "")
    campaign = named.get("campaign") or (positional[1] if len(positional) > 1 else "")
    return StasisArguments(
        number=number or None,
        campaign=campaign or None,
        callback=named.get("callback", "").lower() in _YES,
        ignored=tuple(ignored),
    )


def parse_presentation(text: str | None) -> int | None:
    """The numeric presentation for a `CALLERID(pres)` value (a name, or a number as some setups
    return); None when it is missing or not recognised."""
    if text is None:
        return None
    text = text.strip().lower()
    if text.isdigit():
        return int(text)
    return PRESENTATIONS.get(text)


def build_request(
    start: StasisStart, arguments: StasisArguments, readings: ChannelReadings, default: str
) -> CallRequest:
    """The gate's request: number from the arguments, else the extension; campaign from the arguments,
    else GATEKEEPER_CAMPAIGN, else the accountcode, else `default`."""
    channel = start.channel
    campaign = arguments.campaign or readings.campaign or channel.accountcode or default
    return CallRequest(
        dialled=arguments.number or channel.dialplan.exten,
        campaign=campaign,
        caller_id=channel.caller.number,
        presentation=parse_presentation(readings.presentation),
        callback_requested=arguments.callback,
        uniqueid=channel.id,
        linkedid=readings.linkedid or "",
        source=Source.ARI,
    )


def backoff_delay(failures: int, timing: AriTiming, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max, initial * 2**failures)]."""
    cap = min(timing.reconnect_max, timing.reconnect_initial * 2 ** min(failures, 32))
    return rng.uniform(0.0, cap)


def channel_gone(exc: BaseException) -> bool:
    """A REST 404 on the channel: it left Stasis (hung up, or continued elsewhere)."""
    return isinstance(exc, rest.AriHttpError) and exc.not_found


def _stasis_args(channel: Channel) -> tuple[str, ...]:
    """The Stasis() arguments after the app name, from a channel snapshot (`app_data` "gatekeeper,0612...")."""
    if channel.dialplan.app_name.lower() != "stasis":
        return ()
    return tuple(channel.dialplan.app_data.split(",")[1:])


def _channel_ids(body: bytes) -> list[str]:
    """`channel_ids` of a `GET /applications/{app}` response."""
    data = json.loads(body)
    ids = data.get("channel_ids") if isinstance(data, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise rest.AriBodyError("application response has no channel_ids list")
    return ids


def _synthetic_start(snapshot: bytes, app: str) -> StasisStart:
    """A StasisStart for a channel found in Stasis without one (its event was lost in a gap)."""
    channel = json.loads(snapshot)
    if not isinstance(channel, dict):
        raise rest.AriBodyError("channel response is not an object")
    frame: dict[str, object] = {
        "type": "StasisStart",
        "timestamp": channel.get("creationtime"),
        "args": [],
        "channel": channel,
        "application": app,
    }
    event = parse_event(json.dumps(frame))
    if not isinstance(event, StasisStart):  # pragma: no cover - parse_event keeps the type
        raise rest.AriBodyError("channel response did not parse as a StasisStart")
    return dataclasses.replace(event, args=_stasis_args(event.channel))


# ---------------------------------------------------------------------------------------------------
# The application


class AriApplication:
    """The Stasis application as a service component (`start`, `stop`, `readiness`)."""

    name = "ari"

    def __init__(
        self,
        settings: AriSettings,
        gate: Gate,
        metrics: Metrics,
        *,
        timing: AriTiming = DEFAULT_TIMING,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.gate = gate
        self.metrics = metrics
        self.timing = timing
        self.ignored_frames = 0  # frames that were not ARI events, or events of an unknown type
        self.connections = 0  # websocket connections established so far
        self._rng = rng or random.SystemRandom()
        self._base = settings.url.rstrip("/")
        self._events_url = URL(rest.events_url(self._base, settings.app), encoded=True)
        self._session: aiohttp.ClientSession | None = None
        self._runner: asyncio.Task[None] | None = None
        self._calls: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(timing.max_calls)
        self._connected = False
        self._last_error = "not started"
        self._warned_functions: set[str] = set()

    # -- Component ------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def in_flight(self) -> int:
        """Calls being handled now."""
        return len(self._calls)

    async def start(self) -> None:
        """Start connecting in the background; readiness says when the websocket is up."""
        if self._runner is not None:
            raise RuntimeError("the ARI application is already started")
        self._session = aiohttp.ClientSession(
            headers={"Authorization": rest.basic_authorization(self.settings.username, self.settings.password)},
            connector=aiohttp.TCPConnector(limit=self.timing.max_connections),
            timeout=aiohttp.ClientTimeout(total=None),  # every wait is bounded with asyncio.timeout
        )
        self._last_error = "connecting"
        self._runner = asyncio.create_task(self._keep_connected(), name="ari-websocket")

    async def stop(self) -> None:
        """Stop reconnecting and close the websocket (Asterisk then refuses new calls to the app), wait up
        to `stop_timeout` for the calls in flight, cancel (and so release) the rest, close the session."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        calls = list(self._calls.values())
        if calls:
            _done, pending = await asyncio.wait(calls, timeout=self.timing.stop_timeout)
            if pending:
                log.warning("stopping: %d ARI call(s) still in flight are cancelled and released", len(pending))
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        self._last_error = "stopped"
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def readiness(self) -> Check:
        where = f"{redact_url(self._base)} app {self.settings.app!r}"
        if self._connected:
            return Check(True, f"connected to {where}")
        return Check(False, f"not connected to {where}: {self._last_error}")

    # -- connection -----------------------------------------------------------------------------------

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        self.metrics.ari_connected.set(1 if connected else 0)

    async def _keep_connected(self) -> None:
        """Connect, read until the socket ends, wait a jittered backoff, repeat; until cancelled."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            connected_at: float | None = None
            try:
                async with asyncio.timeout(self.timing.rest_timeout):
                    ws = await self._http().ws_connect(
                        self._events_url,
                        heartbeat=self.timing.heartbeat,
                        timeout=aiohttp.ClientWSTimeout(ws_close=self.timing.rest_timeout),
                    )
                connected_at = loop.time()
                try:
                    self._on_connected()
                    await self._read(ws)
                finally:
                    self._set_connected(False)
                    await ws.close()
                self._last_error = "the websocket was closed"
                log.warning("ARI websocket to %s closed; reconnecting", redact_url(self._base))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._last_error = _describe(exc)
                level = logging.WARNING if failures == 0 or connected_at is not None else logging.DEBUG
                log.log(level, "ARI websocket to %s failed: %s; reconnecting", redact_url(self._base), self._last_error)
            if connected_at is not None and loop.time() - connected_at >= self.timing.stable_after:
                failures = 0
            await asyncio.sleep(backoff_delay(failures, self.timing, self._rng))
            failures += 1

    def _on_connected(self) -> None:
        self.connections += 1
        self._last_error = ""
        self._set_connected(True)
        log.info("ARI application %r connected to %s", self.settings.app, redact_url(self._base))
        self._spawn_background(self._adopt_orphans(), "ari-adopt")

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                await self._dispatch(message.data)
            elif message.type is aiohttp.WSMsgType.ERROR:
                raise ConnectionError(f"websocket error: {_describe(ws.exception())}")

    async def _dispatch(self, frame: str | bytes) -> None:
        """Parse one frame; start a handler for a StasisStart of this app; ignore everything else."""
        try:
            event = parse_event(frame)
        except AriEventError as exc:
            self.ignored_frames += 1
            log.warning("ignoring a websocket frame that is not an ARI event: %s", exc)
            return
        if isinstance(event, UnknownEvent):
            self.ignored_frames += 1
            if event.type == _APPLICATION_REPLACED:
                log.warning("another ARI client registered application %r: calls now go there", self.settings.app)
            else:
                log.debug("ignoring an ARI event of unknown type %r", event.type)
            return
        if isinstance(event, StasisStart) and event.application == self.settings.app:
            await self._start_call(event)

    async def _start_call(self, start: StasisStart) -> None:
        """One task per channel; waits for a free slot when `max_calls` are in flight."""
        channel_id = start.channel.id
        if channel_id in self._calls:
            return  # already being handled (a StasisStart and an adoption raced)
        await self._slots.acquire()
        if channel_id in self._calls:
            self._slots.release()
            return
        task = asyncio.create_task(self._handle(start), name=f"ari-call-{channel_id}")
        self._calls[channel_id] = task

        def finished(done: asyncio.Task[None]) -> None:
            if self._calls.get(channel_id) is done:
                del self._calls[channel_id]
            self._slots.release()

        task.add_done_callback(finished)

    async def _adopt_orphans(self) -> None:
        """Decide the channels in Stasis whose StasisStart this process never saw; a channel that cannot
        be read is released (continue, so the dialplan does not dial)."""
        try:
            ids = _channel_ids(await self._send(rest.get_application(self.settings.app)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("listing the channels already in Stasis failed: %s", _describe(exc))
            return
        for channel_id in ids:
            if channel_id in self._calls:
                continue
            try:
                start = _synthetic_start(await self._send(rest.get_channel(channel_id)), self.settings.app)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not channel_gone(exc):
                    log.warning(
                        "ARI channel %s in Stasis could not be read: %s; releasing it", channel_id, _describe(exc)
                    )
                    await self._release(channel_id)
                continue
            log.info("adopting ARI channel %s, found in Stasis without a StasisStart", channel_id)
            await self._start_call(start)

    def _spawn_background(self, work: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- one call: read, decide, act ------------------------------------------------------------------

    async def _handle(self, start: StasisStart) -> None:
        """The boundary of one call: whatever happens, the channel ends continued, hung up or gone."""
        channel_id = start.channel.id
        decision: DecisionRecord | None = None
        stage = "reading the channel"
        try:
            async with asyncio.timeout(self.timing.handler_timeout):
                request = await self._read_call(start)
                stage = "deciding"
                decision = await self.gate.check(request)
                stage = "answering"
                outcome = await self._answer(channel_id, decision)
            log.debug(
                "ARI channel %s: %s %s (%s, decision %s): %s",
                channel_id,
                decision.verdict.value,
                decision.reason.value,
                decision.number_masked,
                decision.decision_id,
                outcome.value,
            )
            return
        except asyncio.CancelledError:
            await self._release(channel_id)
            raise
        except Exception as exc:
            number = decision.number_masked if decision is not None else "number not known yet"
            if channel_gone(exc):
                log.info("ARI channel %s (%s) hung up while %s", channel_id, number, stage)
                return
            if isinstance(
                exc, rest.AriHttpError | rest.AriBodyError | aiohttp.ClientError | TimeoutError | EvidenceError
            ):
                log.warning(
                    "ARI channel %s (%s): %s failed: %s; releasing it", channel_id, number, stage, _describe(exc)
                )
            else:
                log.error(
                    "ARI channel %s (%s): %s failed unexpectedly: %s; releasing it",
                    channel_id,
                    number,
                    stage,
                    type(exc).__name__,
                    exc_info=exc,
                )
        await self._release(channel_id)

    async def _read_call(self, start: StasisStart) -> CallRequest:
        arguments = parse_arguments(start.args)
        if arguments.ignored:
            log.warning("ARI channel %s: ignoring unknown Stasis argument(s) %s", start.channel.id, arguments.ignored)
        channel_id = start.channel.id
        campaign, presentation, linkedid = await _all(
            self._variable(channel_id, ChannelVariable.CAMPAIGN) if arguments.campaign is None else _nothing(),
            self._function(channel_id, ChannelVariable.PRESENTATION),
            self._function(channel_id, ChannelVariable.LINKEDID),
        )
        readings = ChannelReadings(campaign=campaign, presentation=presentation, linkedid=linkedid)
        return build_request(start, arguments, readings, self.settings.default_campaign)

    async def _answer(self, channel_id: str, decision: DecisionRecord) -> Outcome:
        await _all(
            self._set(channel_id, ChannelVariable.REASON, decision.reason.value),
            self._set(channel_id, ChannelVariable.DECISION_ID, decision.decision_id),
        )
        result = ChannelResult.of(decision.verdict)
        await self._set(channel_id, ChannelVariable.RESULT, result.value)
        if result is ChannelResult.BLOCK and self.settings.hangup_blocked:
            await self._send(rest.hangup(channel_id, reason_code=rest.CAUSE_CALL_REJECTED))
            return Outcome.HUNG_UP
        await self._send(rest.continue_in_dialplan(channel_id))
        return Outcome.CONTINUED

    async def _release(self, channel_id: str) -> Outcome:
        """After a failure: continue (the dialplan sees no ALLOW), else hang up; each bounded."""
        for request, outcome in (
            (rest.continue_in_dialplan(channel_id), Outcome.CONTINUED),
            (rest.hangup(channel_id, reason_code=rest.CAUSE_CALL_REJECTED), Outcome.HUNG_UP),
        ):
            try:
                await self._send(request)
            except Exception as exc:
                if channel_gone(exc):
                    return Outcome.GONE
                log.warning("ARI channel %s: %s failed: %s", channel_id, request.method.value, _describe(exc))
                continue
            return outcome
        log.error("ARI channel %s could not be released; it stays in Stasis until it hangs up", channel_id)
        return Outcome.STUCK

    # -- REST -----------------------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the ARI application is not started")
        return self._session

    async def _send(self, request: rest.AriRequest) -> bytes:
        """One REST call, bounded by `rest_timeout`; a non-2xx answer raises `rest.AriHttpError`."""
        url = URL(self._base + request.target, encoded=True)
        async with (
            asyncio.timeout(self.timing.rest_timeout),
            self._http().request(request.method.value, url) as response,
        ):
            body = await response.read()
            if response.status >= 300:
                raise rest.parse_error(response.status, body, reason=response.reason or "")
            return body

    async def _variable(self, channel_id: str, name: ChannelVariable) -> str | None:
        """A channel variable's value; None if it is not set."""
        try:
            body = await self._send(rest.get_variable(channel_id, name.value))
        except rest.AriHttpError as exc:
            if exc.not_found and exc.message == _VARIABLE_NOT_FOUND:
                return None
            raise
        return rest.parse_variable_value(body)

    async def _function(self, channel_id: str, name: ChannelVariable) -> str | None:
        """A dialplan function's value, best effort: one Asterisk cannot read gives None (logged once per
        function per process); a gone channel still raises."""
        try:
            return await self._variable(channel_id, name)
        except (rest.AriHttpError, rest.AriBodyError) as exc:
            if channel_gone(exc):
                raise
            if name.value not in self._warned_functions:
                self._warned_functions.add(name.value)
                log.warning("reading %s failed (%s); calls go on without it", name.value, _describe(exc))
            return None

    async def _set(self, channel_id: str, name: ChannelVariable, value: str) -> None:
        await self._send(rest.set_variable(channel_id, name.value, value))


async def _nothing() -> None:
    return None


async def _all(*work: Awaitable[T]) -> tuple[T, ...]:
    """Run concurrently and wait for all (no request is left running); then raise the first error."""
    results = await asyncio.gather(*work, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return tuple(r for r in results if not isinstance(r, BaseException))


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
