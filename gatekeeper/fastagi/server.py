"""The FastAGI server: `AGI(agi://host:4573/check?campaign=ID[&number=N])`.

One session: read the environment block (bounded in size and time), read the campaign variable and the
linkedid in one GET FULL VARIABLE when the request does not name the campaign, decide through the gate
(bounded by the decision budget; after it the call is blocked), set GATEKEEPER_RESULT, GATEKEEPER_REASON
and GATEKEEPER_DECISION_ID with one `EXEC MSet`, read its reply, close. A command is never written before
the reply to the previous one has been read (Asterisk would hold the call; see fastagi-pipelining.txt).

Every path ends with the socket closed. When gatekeeper could not set GATEKEEPER_RESULT=ALLOW the
dialplan does not dial (asterisk-config/ shows how), so every failure here is a block.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from dataclasses import replace
from enum import StrEnum

from gatekeeper.config import FastAgiSettings
from gatekeeper.fastagi import protocol
from gatekeeper.fastagi.call import call_from_environment, verdict_variables
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
from gatekeeper.gate import CallRequest, Gate, GateDecision
from gatekeeper.metrics import Metrics
from gatekeeper.service import Check

log = logging.getLogger(__name__)
DRAIN_SECONDS = 10.0  # how long a graceful stop waits for sessions in flight
# One GET FULL VARIABLE reads both: campaign names never contain "|" (configuration enforces it).
CONTEXT_EXPRESSION = "${GATEKEEPER_CAMPAIGN}|${CHANNEL(linkedid)}"


class Outcome(StrEnum):
    """How a session ended (the `outcome` label of gatekeeper_fastagi_sessions_total)."""

    DECIDED = "decided"
    DENIED = "denied"  # source address not on the allow-list
    OVERLOAD = "overload"  # too many sessions at once
    PROTOCOL_ERROR = "protocol-error"
    TIMEOUT = "timeout"  # environment or reply not received in time
    CLOSED = "closed"  # Asterisk closed the connection before the verdict was set
    ERROR = "error"  # a bug; the call is blocked by the dialplan


OUTCOMES = tuple(o.value for o in Outcome)


class SessionClosed(Exception):
    """Asterisk closed the connection."""


class Session:
    """One FastAGI connection: read, parse, dispatch, reply; never two commands in flight."""

    def __init__(self, server: FastAgiServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.settings = server.settings
        self.reader = reader
        self.writer = writer
        self.replies = ReplyParser(max_line_bytes=self.settings.max_line_bytes)
        self.pending = b""  # bytes read but not yet consumed
        self.hung_up = False
        self.deadline: asyncio.Timeout

    async def _more(self) -> None:
        """Read what has arrived (at least one byte) into the session's buffer."""
        if len(self.pending) > self.server.buffer_limit:
            raise protocol.LineTooLong(f"more than {self.server.buffer_limit} bytes without a complete line")
        data = await self.reader.read(self.server.buffer_limit)
        if not data:
            raise SessionClosed
        self.pending += data

    async def _line(self) -> bytes:
        while (end := self.pending.find(b"\n")) < 0:
            if len(self.pending) > self.settings.max_line_bytes:
                raise protocol.LineTooLong(f"a line longer than {self.settings.max_line_bytes} bytes")
            await self._more()
        line, self.pending = self.pending[: end + 1], self.pending[end + 1 :]
        return line

    async def read_environment(self) -> AgiEnvironment:
        """Parse the block as it arrives (usually in one read); bytes after its empty line stay buffered."""
        parser = EnvironmentParser(max_line_bytes=self.settings.max_line_bytes, max_lines=self.settings.max_env_lines)
        while True:
            end = self.pending.rfind(b"\n")
            if end < 0:
                if len(self.pending) > self.settings.max_line_bytes:
                    raise protocol.LineTooLong(f"a line longer than {self.settings.max_line_bytes} bytes")
                await self._more()
                continue
            lines = self.pending[:end].split(b"\n")
            self.pending = self.pending[end + 1 :]
            for i, line in enumerate(lines):
                env = parser.feed_line(line)
                if env is not None:
                    if i + 1 < len(lines):  # e.g. an early HANGUP line: it belongs to the reply phase
                        self.pending = b"\n".join(lines[i + 1 :]) + b"\n" + self.pending
                    return env

    async def command(self, line: bytes) -> Reply:
        """Send one command and wait for its reply (HANGUP lines on the way are noted, not replies)."""
        self.writer.write(line)
        self.deadline.reschedule(asyncio.get_running_loop().time() + self.settings.reply_timeout)
        await self.writer.drain()
        while True:
            reply = self.replies.feed_line(await self._line())
            if isinstance(reply, Hangup):
                self.hung_up = True
            elif reply is not None:
                return reply

    async def run(self) -> Outcome:
        """One deadline for the session, moved on at each step: the environment, then each reply."""
        async with asyncio.timeout(self.settings.env_timeout) as self.deadline:
            return await self._steps()

    async def _steps(self) -> Outcome:
        env = await self.read_environment()
        info = call_from_environment(env)
        request = info.request
        if info.needs_context:
            reply = await self.command(protocol.get_full_variable(CONTEXT_EXPRESSION))
            if isinstance(reply, Success) and reply.data is not None:
                campaign, _, linkedid = reply.data.partition("|")
                request = _with(request, campaign=campaign.strip() or request.campaign, linkedid=linkedid.strip())
        self.deadline.reschedule(None)  # the decision is bounded by its own budget
        result = await self.server.decide(request)
        reply = await self.command(protocol.exec_mset(verdict_variables(result)))
        if not isinstance(reply, Success | DeadChannel):
            log.warning("Asterisk refused the verdict variables (%s); the dialplan blocks the call", reply)
            return Outcome.PROTOCOL_ERROR
        return Outcome.DECIDED


def _with(request: CallRequest, *, campaign: str, linkedid: str) -> CallRequest:
    return replace(request, campaign=campaign, linkedid=linkedid)


class FastAgiServer:
    """The FastAGI listener (a service component)."""

    name = "fastagi"

    def __init__(self, settings: FastAgiSettings, gate: Gate, metrics: Metrics) -> None:
        self.settings = settings
        self.gate = gate
        self.metrics = metrics
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._active = asyncio.Semaphore(settings.max_active)
        self._closing = False
        for outcome in OUTCOMES:
            metrics.fastagi_sessions.labels(outcome)

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
        return len(self._sessions)

    async def start(self) -> None:
        listen = self.settings.listen
        self._server = await asyncio.start_server(
            self._accept,
            listen.host,
            listen.port,
            limit=self.buffer_limit,
            reuse_address=True,
            backlog=min(4096, self.settings.max_sessions),
        )
        log.info("FastAGI listening on %s", listen)

    async def stop(self) -> None:
        """Stop accepting, let the sessions in flight finish (bounded), then close what is left."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        if self._sessions:
            _, pending = await asyncio.wait(set(self._sessions), timeout=DRAIN_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def readiness(self) -> Check:
        if self._server is None or not self._server.is_serving():
            return Check(False, "not listening")
        return Check(True, f"listening on {self.settings.listen}, {len(self._sessions)} sessions open")

    def allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.settings.allow_from)

    async def decide(self, request: CallRequest) -> GateDecision:
        """The gate's verdict; the lookup is bounded by the decision budget, after which the call is blocked.

        The lookup is the decision's only wait, so bounding it bounds the decision (the rest is a few tens
        of microseconds of computation).
        """
        return await self.gate.check(request, budget=self.settings.budget)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else ""
        if not self.allowed(host):
            log.warning("FastAGI connection from %s refused: not in [fastagi] allow_from", host)
            await self._finish(writer, Outcome.DENIED)
            return
        if self._closing or len(self._sessions) >= self.settings.max_sessions:
            await self._finish(writer, Outcome.OVERLOAD)
            return
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        self.metrics.fastagi_open.inc()
        outcome = Outcome.ERROR
        try:
            # Bounded work in progress: in a burst, sessions queue here (their bytes wait in the socket)
            # instead of all competing for the event loop, so each started decision finishes in budget.
            async with self._active:
                outcome = await Session(self, reader, writer).run()
        except TimeoutError:
            outcome = Outcome.TIMEOUT
        except SessionClosed:
            outcome = Outcome.CLOSED
        except (ProtocolError, ValueError) as exc:
            log.warning("FastAGI session from %s ended: %s", host, exc)
            outcome = Outcome.PROTOCOL_ERROR
        except (ConnectionError, OSError):
            outcome = Outcome.CLOSED
        except asyncio.CancelledError:
            outcome = Outcome.ERROR
            raise
        except Exception:
            log.exception("FastAGI session failed; the dialplan blocks the call")
        finally:
            self._sessions.discard(task)
            self.metrics.fastagi_open.dec()
            await self._finish(writer, outcome)

    async def _finish(self, writer: asyncio.StreamWriter, outcome: Outcome) -> None:
        self.metrics.fastagi_sessions.labels(outcome.value).inc()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
