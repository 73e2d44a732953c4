"""The FastAGI server: `AGI(agi://host:4573/check?campaign=ID[&number=N])`.

One session: read the environment block (bounded in size, and in time from the moment the connection is
accepted), read the campaign variable and the linkedid in one GET FULL VARIABLE when the request does not
name the campaign, decide through the gate (bounded by the decision budget; after it the call is blocked),
set GATEKEEPER_RESULT, GATEKEEPER_REASON and GATEKEEPER_DECISION_ID with one `EXEC MSet` once the decision's
record is kept, read its reply, close. A command is never written before the reply to the previous one has
been read (Asterisk would hold the call; see fastagi-pipelining.txt).

Each connection is an `asyncio.Protocol`: while its environment block arrives it costs a buffer and one
timer, no task and no decision slot, so a thousand stalled or malicious clients delay nobody. Only a
complete request starts a task, and only its decision takes one of the `max_active` slots (a burst queues
there, bounded in time, instead of all competing for the event loop).

Every path ends with the socket closed. When gatekeeper could not set GATEKEEPER_RESULT=ALLOW the
dialplan does not dial (asterisk-config/ shows how), so every failure here is a block.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import resource
from dataclasses import replace

from gatekeeper.config import FastAgiSettings
from gatekeeper.contract import GATEKEEPER_CAMPAIGN, Reason, SessionOutcome, Verdict
from gatekeeper.fastagi import protocol
from gatekeeper.fastagi.call import call_from_environment
from gatekeeper.fastagi.protocol import (
    AgiEnvironment,
    DeadChannel,
    EnvironmentParser,
    Hangup,
    ProtocolError,
    Reply,
    ReplyParser,
    Success,
)
from gatekeeper.gate import CallRequest, EvidenceError, Gate
from gatekeeper.metrics import Metrics
from gatekeeper.record import DecisionRecord
from gatekeeper.service import Check

log = logging.getLogger(__name__)
DRAIN_SECONDS = 10.0  # how long a graceful stop waits for sessions in flight
# One GET FULL VARIABLE reads both: campaign names never contain "|" (configuration enforces it).
CONTEXT_EXPRESSION = f"${{{GATEKEEPER_CAMPAIGN}}}|${{CHANNEL(linkedid)}}"
ALLOW_CACHE_SIZE = 4096  # peer addresses whose allow-list verdict is remembered
SPARE_FILES = 256  # file descriptors beyond max_sessions (Redis, HTTP, logs, the spool)


class SessionClosed(Exception):
    """Asterisk closed the connection."""


class NoSlot(Exception):
    """No decision slot came free in time (the `overload` outcome)."""


class Connection(asyncio.Protocol):
    """One FastAGI connection: the environment is read by callbacks, the rest of the session by a task."""

    __slots__ = (
        "deadline",
        "ended",
        "hung_up",
        "parser",
        "pending",
        "replies",
        "server",
        "task",
        "transport",
        "waiter",
    )

    def __init__(self, server: FastAgiServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser: EnvironmentParser | None = None
        self.replies: ReplyParser | None = None
        self.pending = b""  # bytes after the environment block, not yet taken as replies
        self.waiter: asyncio.Future[Reply] | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.hung_up = False
        self.ended = False

    # -- callbacks -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio's classes
        server = self.server
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else ""
        if not server.allowed(host):
            log.warning("FastAGI connection from %s refused: not in [fastagi] allow_from", host)
            self._end(SessionOutcome.DENIED)
            return
        if server.closing or len(server.connections) >= server.settings.max_sessions:
            self._end(SessionOutcome.OVERLOAD)
            return
        server.opened(self)
        settings = server.settings
        self.parser = EnvironmentParser(max_line_bytes=settings.max_line_bytes, max_lines=settings.max_env_lines)
        self.deadline = server.loop.call_later(settings.env_timeout, self._expired)

    def data_received(self, data: bytes) -> None:
        if self.ended:
            return
        if self.task is not None:  # the reply phase
            self.pending += data
            self._deliver()
            return
        assert self.parser is not None
        try:
            env, rest = self.parser.feed(data)
        except ProtocolError as exc:
            log.warning("FastAGI session from %s ended: %s", self._peer(), exc)
            self._end(SessionOutcome.PROTOCOL_ERROR)
            return
        if env is None:
            return
        self.parser = None
        self.pending = rest
        self.task = self.server.loop.create_task(self._session(env))

    def eof_received(self) -> bool:
        return False  # Asterisk closed its side: so do we (connection_lost follows)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(SessionClosed())
        if self.task is None:
            self._end(SessionOutcome.CLOSED)  # before the request was complete
        # else: the session task sees SessionClosed (or finishes its decision) and ends the session

    def _expired(self) -> None:
        """The environment deadline (from accept) or a reply deadline passed."""
        self.deadline = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(TimeoutError())
        elif self.task is None:
            self._end(SessionOutcome.TIMEOUT)

    # -- the session -----------------------------------------------------------------------------------

    async def _session(self, env: AgiEnvironment) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        outcome = SessionOutcome.ERROR
        try:
            outcome = await self._steps(env)
        except TimeoutError:
            outcome = SessionOutcome.TIMEOUT
        except SessionClosed:
            outcome = SessionOutcome.CLOSED
        except (ProtocolError, ValueError) as exc:
            log.warning("FastAGI session from %s ended: %s", self._peer(), exc)
            outcome = SessionOutcome.PROTOCOL_ERROR
        except OSError:
            outcome = SessionOutcome.CLOSED
        except NoSlot:
            outcome = SessionOutcome.OVERLOAD
        except EvidenceError:
            pass  # logged where it happened; no verdict without its record: the dialplan blocks the call
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("FastAGI session failed; the dialplan blocks the call")
        finally:
            self._end(outcome)

    async def _steps(self, env: AgiEnvironment) -> SessionOutcome:
        info = call_from_environment(env)
        request = info.request
        if info.needs_context:
            reply = await self.command(protocol.get_full_variable(CONTEXT_EXPRESSION))
            if isinstance(reply, Success) and reply.data is not None:
                campaign, _, linkedid = reply.data.partition("|")
                request = _with(request, campaign=campaign.strip() or request.campaign, linkedid=linkedid.strip())
        record = await self.server.decide(request)
        reply = await self.command(verdict_command(record))
        if not isinstance(reply, Success | DeadChannel):
            log.warning("Asterisk refused the verdict variables (%s); the dialplan blocks the call", reply)
            return SessionOutcome.PROTOCOL_ERROR
        return SessionOutcome.DECIDED

    async def command(self, line: bytes) -> Reply:
        """Send one command and wait (bounded) for its reply; HANGUP lines on the way are noted, not replies."""
        if self.ended or self.transport is None or self.transport.is_closing():
            raise SessionClosed
        loop = self.server.loop
        waiter: asyncio.Future[Reply] = loop.create_future()
        self.waiter = waiter
        self.transport.write(line)
        self.deadline = loop.call_later(self.server.settings.reply_timeout, self._expired)
        try:
            self._deliver()
            return await waiter
        finally:
            self.waiter = None
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

    def _deliver(self) -> None:
        """Hand the reply to the waiting command once its line is complete (bytes before it: HANGUP lines)."""
        waiter = self.waiter
        if waiter is None or waiter.done():
            if len(self.pending) > self.server.buffer_limit:
                self._end(SessionOutcome.PROTOCOL_ERROR)
            return
        if self.replies is None:
            self.replies = ReplyParser(max_line_bytes=self.server.settings.max_line_bytes)
        try:
            while (end := self.pending.find(b"\n")) >= 0:
                line, self.pending = self.pending[: end + 1], self.pending[end + 1 :]
                reply = self.replies.feed_line(line)
                if isinstance(reply, Hangup):
                    self.hung_up = True
                elif reply is not None:
                    waiter.set_result(reply)
                    return
            if len(self.pending) > self.server.settings.max_line_bytes:
                raise protocol.LineTooLong(f"a line longer than {self.server.settings.max_line_bytes} bytes")
        except ProtocolError as exc:
            waiter.set_exception(exc)

    # -- the end ---------------------------------------------------------------------------------------

    def _end(self, outcome: SessionOutcome) -> None:
        if self.ended:
            return
        self.ended = True
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.server.closed(self, outcome)
        if self.transport is not None:
            self.transport.close()

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return str(peer[0]) if isinstance(peer, tuple) else "?"


_VERDICT_PREFIXES: dict[tuple[Verdict, Reason], bytes] = {}
_DECISION_ID = re.compile(r"[0-9A-Z]{26}")


def verdict_command(record: DecisionRecord) -> bytes:
    """`EXEC MSet "GATEKEEPER_RESULT=…,GATEKEEPER_REASON=…,GATEKEEPER_DECISION_ID=…"` for a record.

    `protocol.exec_mset` checks and quotes every pair; its line for a (verdict, reason) is made once and
    only the decision id (26 characters of Crockford base32) is appended per call.
    """
    if not _DECISION_ID.fullmatch(record.decision_id):
        return protocol.exec_mset(record.channel_variables())
    key = (record.verdict, record.reason)
    prefix = _VERDICT_PREFIXES.get(key)
    if prefix is None:
        line = protocol.exec_mset(record.channel_variables())
        prefix = _VERDICT_PREFIXES[key] = line[: line.rindex(b"=") + 1]
    return prefix + record.decision_id.encode() + b'"\n'


def _with(request: CallRequest, *, campaign: str, linkedid: str) -> CallRequest:
    return replace(request, campaign=campaign, linkedid=linkedid)


def raise_open_files_limit(needed: int) -> int:
    """Raise the soft limit on open files towards `needed` (up to the hard limit); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


class FastAgiServer:
    """The FastAGI listener (a service component)."""

    name = "fastagi"

    def __init__(self, settings: FastAgiSettings, gate: Gate, metrics: Metrics) -> None:
        self.settings = settings
        self.gate = gate
        self.metrics = metrics
        self.connections: set[Connection] = set()
        self.closing = False
        self.loop: asyncio.AbstractEventLoop
        self._server: asyncio.Server | None = None
        self._slots = asyncio.Semaphore(settings.max_active)
        self._idle = asyncio.Event()
        self._idle.set()
        self._allowed: dict[str, bool] = {}
        self._outcomes = {outcome: metrics.fastagi_sessions.labels(outcome.value) for outcome in SessionOutcome}

    @property
    def buffer_limit(self) -> int:
        """The most a session buffers: the environment block's lines at their longest."""
        return min(self.settings.max_line_bytes * self.settings.max_env_lines, 1 << 16)

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def open_sessions(self) -> int:
        return len(self.connections)

    async def start(self) -> None:
        limit = raise_open_files_limit(self.settings.max_sessions + SPARE_FILES)
        if limit < self.settings.max_sessions + SPARE_FILES:
            log.warning("open files are limited to %d: fewer than [fastagi] max_sessions = %d can be served; "
                        "raise LimitNOFILE", limit, self.settings.max_sessions)  # fmt: skip
        listen = self.settings.listen
        self.loop = asyncio.get_running_loop()  # its sessions use it (asking for it each time costs a getpid)
        self._server = await self.loop.create_server(
            lambda: Connection(self),
            listen.host,
            listen.port,
            reuse_address=True,
            backlog=min(4096, self.settings.max_sessions),
        )
        log.info("FastAGI listening on %s", listen)

    async def stop(self) -> None:
        """Stop accepting, let the sessions in flight finish (bounded), then close what is left."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_SECONDS):
                await self._idle.wait()
        tasks = [c.task for c in self.connections if c.task is not None]
        for connection in list(self.connections):
            if connection.task is None:
                connection._end(SessionOutcome.CLOSED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def readiness(self) -> Check:
        if self._server is None or not self._server.is_serving():
            return Check(False, "not listening")
        return Check(True, f"listening on {self.settings.listen}, {len(self.connections)} sessions open")

    def allowed(self, host: str) -> bool:
        verdict = self._allowed.get(host)
        if verdict is None:
            if len(self._allowed) >= ALLOW_CACHE_SIZE:
                self._allowed.clear()
            verdict = self._allowed[host] = self._check_allowed(host)
        return verdict

    def _check_allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.settings.allow_from)

    def opened(self, connection: Connection) -> None:
        self.connections.add(connection)
        self._idle.clear()
        self.metrics.fastagi_open.inc()

    def closed(self, connection: Connection, outcome: SessionOutcome) -> None:
        self._outcomes[outcome].inc()
        if connection in self.connections:
            self.connections.discard(connection)
            self.metrics.fastagi_open.dec()
            if not self.connections:
                self._idle.set()

    async def decide(self, request: CallRequest) -> DecisionRecord:
        """The gate's verdict, once its record is kept; the lookup is bounded by the decision budget.

        The decision takes one of `max_active` slots; a session waits for one at most `reply_timeout` (then
        it ends as `overload`, without a verdict: the dialplan blocks the call).
        """
        try:
            if self._slots.locked():
                async with asyncio.timeout(self.settings.reply_timeout):
                    await self._slots.acquire()
            else:
                await self._slots.acquire()  # free: returns at once
        except TimeoutError:
            log.warning("no decision slot within %.1f s ([fastagi] max_active = %d); the call is blocked",
                        self.settings.reply_timeout, self.settings.max_active)  # fmt: skip
            raise NoSlot from None
        try:
            return await self.gate.check(request, budget=self.settings.budget)
        finally:
            self._slots.release()
