"""A FastAGI client that behaves like Asterisk 23.4.1 running ``AGI(agi://...)`` on one call.

Built from ``shared/asterisk-traces/`` (fastagi-session/-hangup/-close/-pipelining.txt and README.md);
where the traces are silent, ``res/res_agi.c`` decides (usage texts of untraced commands, the 2047-byte
command buffer, the ``failure`` line). What it does, as Asterisk does:

- connects (refused or timed out: ``AGISTATUS=FAILURE``, no exception), sends the environment block in
  Asterisk's order (``agi_network_script`` only when the URL has a path, ``agi_accountcode: `` with its
  trailing space, ``agi_arg_N``, the empty line);
- reads commands like Asterisk's ``fgets`` loop on a buffered socket: a command runs only when the socket
  becomes readable, so commands written back to back before reading a reply sit in the buffer until more
  bytes or the server's close arrive (``fastagi-pipelining.txt``), and the call is held meanwhile;
- splits arguments exactly like ``parse_args`` (:func:`split_arguments`), matches command words
  case-insensitively, answers GET [FULL] VARIABLE, SET VARIABLE, VERBOSE, EXEC (NoOp, Set, MSet, Hangup,
  Answer, Verbose; anything else is ``-2``), NOOP, ANSWER, CHANNEL STATUS, HANGUP, DATABASE, and gives
  ``510``/``511``/``520`` with Asterisk's texts;
- sends the unprompted ``HANGUP`` line when the channel hangs up (not with ``AGISIGHUP=no``; twice and then
  closes with ``AGIEXITONHANGUP=yes``) and once more when the session ends, then closes.

Typical use::

    result = await run_session("127.0.0.1", port, channel=SimChannel(url="agi://gk/check?campaign=acme"))
    assert result.agi_status is AgiStatus.SUCCESS
    assert result.variables["GATEKEEPER_RESULT"] == "ALLOW"

It records every line with a timestamp but logs nothing, sleeps never, and uses plain asyncio streams, so
hundreds of concurrent calls are cheap (benchmarks use it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Final

#: Asterisk reads each command with ``fgets(buf, 2048)``: at most 2047 bytes, the rest is the next command.
AGI_BUF_LEN: Final = 2048
#: stdio buffer of the socket's FILE (st_blksize of a socket on Linux).
STDIO_BUFFER_BYTES: Final = 4096
#: ``parse_args`` keeps at most MAX_ARGS - 1 arguments.
MAX_ARGS: Final = 128
#: GET VARIABLE copies the value into ``char tempstr[1024]``.
GET_VARIABLE_MAX_BYTES: Final = 1023
#: MSet splits into at most 24 pairs.
MSET_MAX_PAIRS: Final = 24
#: Asterisk's MAX_AGI_CONNECT.
DEFAULT_CONNECT_TIMEOUT: Final = 2.0
#: Real Asterisk would hold the call for ever; tests get a bounded wait instead.
DEFAULT_SESSION_TIMEOUT: Final = 10.0

HANGUP_LINE: Final = b"HANGUP\n"
INVALID_COMMAND: Final = b"510 Invalid or unknown command\n"
DEAD_CHANNEL: Final = b"511 Command Not Permitted on a dead channel or intercept routine\n"

_ENCODING: Final = "utf-8"
_ERRORS: Final = "surrogateescape"


class AgiStatus(StrEnum):
    """The AGISTATUS channel variable after AGI() returns."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    HANGUP = "HANGUP"


# enum agi_result values, as printed in "AGI Script ... completed, returning N".
_RETURN_CODE: Final[Mapping[AgiStatus, int]] = MappingProxyType(
    {AgiStatus.FAILURE: -1, AgiStatus.SUCCESS: 0, AgiStatus.HANGUP: 4}
)


class ChannelState(IntEnum):
    """Asterisk's ``enum ast_channel_state``, as CHANNEL STATUS reports it."""

    DOWN = 0
    RESERVED = 1
    OFFHOOK = 2
    DIALING = 3
    RING = 4
    RINGING = 5
    UP = 6
    BUSY = 7


_STATE_NAMES: Final = ("Down", "Rsrvd", "OffHook", "Dialing", "Ring", "Ringing", "Up", "Busy")


class Direction(StrEnum):
    """Who wrote a line, with the trace files' markers."""

    ASTERISK = ">>>"
    SERVER = "<<<"


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


def _trace_variables() -> Mapping[str, str]:
    # Every traced call was originated with Variable: GATEKEEPER_CAMPAIGN=acme.
    return MappingProxyType({"GATEKEEPER_CAMPAIGN": "acme"})


@dataclass(frozen=True, slots=True)
class SimChannel:
    """The call that runs ``AGI(url,args...)``. Defaults reproduce Session 2 of fastagi-session.txt.

    ``url`` is what the dialplan passed to AGI() and what ``agi_request`` shows; the simulator connects to
    the host and port given to :func:`run_session`, whatever the URL says. ``callerid_num`` /
    ``callerid_name`` ``None`` mean "not valid" (``agi_callerid: unknown``, ``CALLERID(num)`` empty).
    ``agi_sighup=False`` / ``agi_exit_on_hangup=True`` set ``AGISIGHUP=no`` / ``AGIEXITONHANGUP=yes`` as
    channel variables, as the traces did; the same variables given in ``variables`` work as well.
    ``hangup_after_answer`` hangs the far end up that many seconds after ANSWER (the traced [sink]
    answered, waited 1 s and hung up); ``hangup_after_connect`` counts from the connection instead.
    ``functions`` gives values for dialplan functions the simulator does not know, e.g. ``{"DB(a/b)": "x"}``.
    """

    url: str = "agi://127.0.0.1:4573/check"
    args: tuple[str, ...] = ()
    channel: str = "Local/0612345678@outbound-00000022;2"
    language: str = "en"
    tech: str = "Local"
    uniqueid: str = "1795860072.69"
    version: str = "23.4.1"
    callerid_num: str | None = None
    callerid_name: str | None = None
    callingpres: int | None = None
    callingani2: int = 0
    callington: int = 0
    callingtns: int = 0
    dnid: str | None = None
    rdnis: str | None = None
    context: str = "outbound"
    extension: str = "0612345678"
    priority: int = 1
    accountcode: str = ""
    threadid: int = 140677382702784
    variables: Mapping[str, str] = field(default_factory=_trace_variables, hash=False)
    functions: Mapping[str, str] = field(default_factory=_empty, hash=False)
    state: ChannelState = ChannelState.RING
    agi_sighup: bool = True
    agi_exit_on_hangup: bool = False
    hangup_after_connect: float | None = None
    hangup_after_answer: float | None = None
    hangup_cause: int = 16

    @property
    def app_data(self) -> str:
        """The AGI() application data, as ``ast_channel_data()`` (used in VERBOSE log lines)."""
        return ",".join((self.url, *self.args))

    def initial_variables(self) -> dict[str, str]:
        variables = dict(self.variables)
        if not self.agi_sighup:
            variables["AGISIGHUP"] = "no"
        if self.agi_exit_on_hangup:
            variables["AGIEXITONHANGUP"] = "yes"
        return variables


def network_script(url: str) -> str:
    """What Asterisk sends as ``agi_network_script``: the URL after ``host[:port]/`` ("" if none)."""
    lowered = url.lower()
    if lowered.startswith("agi://"):
        host = url[len("agi://") :]
    elif lowered.startswith("hagi://"):
        host = url[len("hagi://") :]
    else:
        raise ValueError("the FastAGI simulator needs an agi:// or hagi:// URL")
    return host.partition("/")[2]


def environment_block(channel: SimChannel) -> bytes:
    """The bytes Asterisk sends right after connecting (launch_netscript + setup_env)."""
    script = network_script(channel.url)
    lines = ["agi_network: yes"]
    if script:
        lines.append(f"agi_network_script: {script}")
    lines += [
        f"agi_request: {channel.url}",
        f"agi_channel: {channel.channel}",
        f"agi_language: {channel.language}",
        f"agi_type: {channel.tech}",
        f"agi_uniqueid: {channel.uniqueid}",
        f"agi_version: {channel.version}",
        f"agi_callerid: {_or_unknown(channel.callerid_num)}",
        f"agi_calleridname: {_or_unknown(channel.callerid_name)}",
        f"agi_callingpres: {calling_presentation(channel)}",
        f"agi_callingani2: {channel.callingani2}",
        f"agi_callington: {channel.callington}",
        f"agi_callingtns: {channel.callingtns}",
        f"agi_dnid: {channel.dnid or 'unknown'}",
        f"agi_rdnis: {_or_unknown(channel.rdnis)}",
        f"agi_context: {channel.context}",
        f"agi_extension: {channel.extension}",
        f"agi_priority: {channel.priority}",
        "agi_enhanced: 0.0",
        f"agi_accountcode: {channel.accountcode}",
        f"agi_threadid: {channel.threadid}",
    ]
    lines += [f"agi_arg_{index}: {arg}" for index, arg in enumerate(channel.args, start=1)]
    return ("\n".join(lines) + "\n\n").encode(_ENCODING, _ERRORS)


def calling_presentation(channel: SimChannel) -> int:
    """``agi_callingpres``: as given, else 67 (AST_PRES_NUMBER_NOT_AVAILABLE) without caller id, else 0."""
    if channel.callingpres is not None:
        return channel.callingpres
    return 67 if channel.callerid_num is None and channel.callerid_name is None else 0


def _or_unknown(value: str | None) -> str:
    return "unknown" if value is None else value


def split_arguments(line: str) -> list[str]:
    """Asterisk's ``parse_args``: how a command line becomes argv.

    Blanks (space, tab) separate; ``"`` toggles quoting and is removed (a quote after a blank starts an
    argument, so ``""`` is an empty one); ``\\`` makes the next character literal, inside or outside
    quotes, and is dropped; single quotes are ordinary. Arguments past MAX_ARGS - 1 are dropped.
    """
    args: list[str] = []
    current: list[str] | None = None
    quoted = escaped = False
    for char in line:
        if char == '"' and not escaped:
            quoted = not quoted
            if quoted and current is None and len(args) < MAX_ARGS - 1:
                current = []
            continue
        if char in " \t" and not quoted and not escaped:
            if current is not None:
                args.append("".join(current))
                current = None
            continue
        if char == "\\" and not escaped:
            escaped = True
            continue
        if current is None:
            if len(args) >= MAX_ARGS - 1:
                continue  # "Too many arguments, truncating" (escaped stays set, as in C)
            current = []
        current.append(char)
        escaped = False
    if current is not None:
        args.append("".join(current))
    return args


def ast_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("yes", "true", "y", "t", "1", "on")


def ast_false(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("no", "false", "n", "f", "0", "off")


@dataclass(frozen=True, slots=True)
class WireLine:
    """One line on the wire: who wrote it, when (seconds since connect) and its bytes without the LF."""

    direction: Direction
    at: float
    line: bytes
    complete: bool = True


@dataclass(frozen=True, slots=True)
class ExecutedCommand:
    """A command as Asterisk ran it.

    ``pipelined``: it was already in Asterisk's buffer while Asterisk waited for new bytes, i.e. the
    server sent it before reading the previous reply. ``after_eof``: it only ran because the server closed
    (or half-closed) its side; its reply most likely went nowhere.
    """

    line: bytes
    args: tuple[str, ...]
    reply: bytes
    dead: bool
    pipelined: bool
    after_eof: bool
    at: float


@dataclass(frozen=True, slots=True)
class SessionResult:
    """Everything one simulated AGI() call did, for assertions.

    ``sent`` is every byte Asterisk wrote, including lines written after the server had gone (the final
    ``HANGUP``, replies to commands run at close): compare what the *server* read, not this, with a trace.
    ``received`` is every byte read from the server, ``transcript`` both as timestamped lines (server lines
    stamped on arrival; a last line without LF has ``complete=False``). ``variables`` are the channel
    variables after AGI() returned, ``AGISTATUS`` included. ``duration`` runs from connect to close.
    ``log`` holds the Asterisk log messages the traces show (EXEC, unknown application, VERBOSE, "AGI
    Script ... completed", connection failures); ``unsimulated`` the real commands answered neutrally.
    """

    channel: SimChannel
    connected: bool
    agi_status: AgiStatus
    transcript: tuple[WireLine, ...]
    sent: bytes
    received: bytes
    commands: tuple[ExecutedCommand, ...]
    variables: Mapping[str, str]
    hangup_lines: int
    hung_up: bool
    hangup_cause: int
    duration: float
    log: tuple[str, ...]
    unsimulated: tuple[bytes, ...] = ()

    @property
    def dialplan_continues(self) -> bool:
        """After AGISTATUS=HANGUP Asterisk goes to the ``h`` extension; otherwise to the next priority."""
        return self.agi_status is not AgiStatus.HANGUP

    @property
    def pipelined_commands(self) -> tuple[bytes, ...]:
        return tuple(command.line for command in self.commands if command.pipelined)

    def lines(self, direction: Direction) -> tuple[bytes, ...]:
        return tuple(line.line for line in self.transcript if line.direction is direction)


class SimulatorTimeout(TimeoutError):
    """The session outlived ``session_timeout`` (real Asterisk would have held the call on)."""

    def __init__(self, result: SessionResult) -> None:
        super().__init__(f"simulated AGI session still running after {result.duration:.3f}s")
        self.result = result


# A command handler returns the reply, or None for RESULT_SHOWUSAGE.
_Handler = Callable[["SimulatedCall", list[str]], bytes | None]


@dataclass(frozen=True, slots=True)
class _Command:
    words: tuple[str, ...]
    runs_dead: bool
    handler: _Handler
    usage: tuple[str, ...] = ()


class SimulatedCall:
    """One call running FastAGI against a server; :meth:`run` returns the :class:`SessionResult`.

    Events for tests, all set at most once: ``connected``, ``channel_dead`` (Asterisk noticed the hangup
    and sent ``HANGUP`` unless AGISIGHUP=no), ``stalled`` (Asterisk waits for new bytes while whole
    commands sit unexecuted in its buffer: the server pipelined).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        channel: SimChannel | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.channel = channel if channel is not None else SimChannel()
        self._connect_timeout = connect_timeout
        self._session_timeout = session_timeout
        self.connected = asyncio.Event()
        self.channel_dead = asyncio.Event()
        self.stalled = asyncio.Event()

        self._variables = self.channel.initial_variables()
        self._send_sighup = not ast_false(self._variables.get("AGISIGHUP"))
        self._exit_on_hangup = ast_true(self._variables.get("AGIEXITONHANGUP"))
        self._state = self.channel.state
        self._callerid_num = self.channel.callerid_num
        self._callerid_name = self.channel.callerid_name
        self._astdb: dict[tuple[str, str], str] = {}

        self._status = AgiStatus.SUCCESS
        self._hung_up = False
        self._hangup_cause = 0
        self._needhup = False
        self._dead = False
        self._hangup_future: asyncio.Future[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []

        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[bytes] | None = None
        self._kernel = bytearray()  # received, not yet read() by stdio
        self._stdio = bytearray()  # read() into the FILE buffer, not yet consumed by fgets
        self._eof = False  # the socket reported EOF (readable for ever)
        self._feof = False  # stdio hit EOF (sticky)
        self._stuck_lines = 0

        self._t0 = time.perf_counter()
        self._connected = False
        self._transcript: list[WireLine] = []
        self._rx_partial = bytearray()
        self._sent = bytearray()
        self._received = bytearray()
        self._commands: list[ExecutedCommand] = []
        self._unsimulated: list[bytes] = []
        self._line = b""
        self._log: list[str] = []
        self._hangup_lines = 0
        self._duration = 0.0

    # ---------------------------------------------------------------------------------------------
    # public

    def hang_up_far_end(self, cause: int | None = None) -> None:
        """The other party hangs up now (cause 16, normal clearing, unless given)."""
        self._hang_up(self.channel.hangup_cause if cause is None else cause)

    async def run(self) -> SessionResult:
        loop = asyncio.get_running_loop()
        self._hangup_future = loop.create_future()
        if self._hung_up:
            self._hangup_future.set_result(None)
        try:
            async with asyncio.timeout(self._connect_timeout):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            self._connect_failed(exc)
            return self._result()
        self._t0 = time.perf_counter()
        self._connected = True
        self.connected.set()
        if self.channel.hangup_after_connect is not None:
            self._timers.append(loop.call_later(self.channel.hangup_after_connect, self.hang_up_far_end))
        timed_out = False
        try:
            async with asyncio.timeout(self._session_timeout):
                await self._send(environment_block(self.channel))
                await self._agi_loop()
                if self._send_sighup:
                    await self._send_hangup_line()
        except TimeoutError:
            timed_out = True
        finally:
            await self._close()
        result = self._result()
        if timed_out:
            raise SimulatorTimeout(result)
        return result

    # ---------------------------------------------------------------------------------------------
    # run_agi()

    async def _agi_loop(self) -> None:
        while True:
            if self._needhup:
                self._needhup = False
                self._dead = True
                if self._send_sighup:
                    await self._send_hangup_line()
                self.channel_dead.set()
                if self._exit_on_hangup:
                    return
            if not self._dead and self._hung_up:
                # ast_read() returns NULL: the channel is gone.
                self._needhup = True
                if self._status is AgiStatus.SUCCESS:
                    self._status = AgiStatus.HANGUP
                continue
            if not self._readable():
                # poll(): only new bytes (or EOF) on the socket wake Asterisk, not its own buffer.
                self._stuck_lines = self._stdio.count(b"\n")
                if self._stuck_lines:
                    self.stalled.set()
                if self._dead:
                    await self._wait_readable()
                else:
                    await self._wait_readable_or_hangup()
                if not self._readable() or (self._hung_up and not self._dead):
                    continue  # the hangup is seen first, as poll() reports the channel before the socket
            command = await self._read_command()
            if command is None:
                code = _RETURN_CODE[self._status]
                self._log.append(f"<{self.channel.channel}>AGI Script {self.channel.url} completed, returning {code}")
                return
            if command[:7].lower() == b"failure":
                # "Special case for inability to execute child process": the AGI ends with FAILURE.
                self._status = AgiStatus.FAILURE
                return
            await self._execute(command)

    def _readable(self) -> bool:
        return bool(self._kernel) or self._eof

    async def _read_command(self) -> bytes | None:
        """The fgets loop of run_agi(): one command, or None when the server has closed."""
        buf = b""
        room = AGI_BUF_LEN
        while room > 1:
            got = await self._fgets(room)
            if got is not None:
                buf += got
            if self._feof:
                break
            buf = buf.split(b"\0", 1)[0]  # strlen(): a NUL hides the rest, reading goes on
            if buf.endswith(b"\n"):
                break
            room = AGI_BUF_LEN - len(buf)
        buf = buf.split(b"\0", 1)[0]
        if not buf:
            return None
        return buf[:-1] if buf.endswith(b"\n") else buf

    async def _fgets(self, size: int) -> bytes | None:
        out = bytearray()
        limit = size - 1
        while len(out) < limit:
            if not self._stdio and not await self._refill():
                self._feof = True
                break
            want = limit - len(out)
            newline = self._stdio.find(b"\n", 0, want)
            take = newline + 1 if newline >= 0 else min(want, len(self._stdio))
            out += self._stdio[:take]
            del self._stdio[:take]
            if newline >= 0:
                break
        return bytes(out) if out else None

    async def _refill(self) -> bool:
        if self._feof:
            return False
        if not self._kernel:
            if self._eof:
                return False
            await self._wait_readable()  # a blocking read(): the channel is not watched meanwhile
            if not self._kernel:
                return False
        self._stdio += self._kernel[:STDIO_BUFFER_BYTES]
        del self._kernel[:STDIO_BUFFER_BYTES]
        return True

    def _pending_read(self) -> asyncio.Task[bytes]:
        if self._read_task is None:
            assert self._reader is not None
            self._read_task = asyncio.get_running_loop().create_task(self._reader.read(STDIO_BUFFER_BYTES))
        return self._read_task

    async def _wait_readable(self) -> None:
        task = self._pending_read()
        await asyncio.wait((task,))
        self._take_read(task)

    async def _wait_readable_or_hangup(self) -> None:
        task = self._pending_read()
        assert self._hangup_future is not None
        await asyncio.wait((task, self._hangup_future), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            self._take_read(task)

    def _take_read(self, task: asyncio.Task[bytes]) -> None:
        self._read_task = None
        try:
            data = task.result()
        except OSError:  # a reset reads as end of file, as fgets() sees it
            data = b""
        if not data:
            self._eof = True
            return
        self._kernel += data
        self._received += data
        self._record_received(data)

    # ---------------------------------------------------------------------------------------------
    # agi_handle_command()

    async def _execute(self, line: bytes) -> None:
        at = self._now()
        argv = split_arguments(line.decode(_ENCODING, _ERRORS))
        pipelined = self._stuck_lines > 0
        if pipelined:
            self._stuck_lines -= 1
        dead = self._dead
        reply = self._dispatch(line, argv, dead)
        self._commands.append(ExecutedCommand(line, tuple(argv), reply, dead, pipelined, self._eof, at))
        await self._send(reply)

    def _dispatch(self, line: bytes, argv: list[str], dead: bool) -> bytes:
        command = _find_command(argv)
        if command is None:
            return INVALID_COMMAND
        if dead and not command.runs_dead:
            return DEAD_CHANNEL
        self._line = line
        reply = command.handler(self, argv)
        if reply is not None:
            return reply
        if not command.usage:
            return b"520 Invalid command syntax.  Proper usage not available.\n"
        usage = "\n".join(command.usage)
        return f"520-Invalid command syntax.  Proper usage follows:\n{usage}\n520 End of proper usage.\n".encode()

    def _cmd_answer(self, argv: list[str]) -> bytes | None:
        if self._hung_up:
            return b"200 result=-1\n"
        self._answer()
        return b"200 result=0\n"

    def _cmd_asyncagi_break(self, argv: list[str]) -> bytes | None:
        return b"200 result=0\n"

    def _cmd_channel_status(self, argv: list[str]) -> bytes | None:
        if len(argv) == 2:
            return f"200 result={int(self._state)}\n".encode()
        if len(argv) == 3:
            state = int(self._state) if argv[2] == self.channel.channel else -1
            return f"200 result={state}\n".encode()
        return None

    def _cmd_database_del(self, argv: list[str]) -> bytes | None:
        if len(argv) != 4:
            return None
        existed = self._astdb.pop((argv[2], argv[3]), None) is not None
        return b"200 result=1\n" if existed else b"200 result=0\n"

    def _cmd_database_deltree(self, argv: list[str]) -> bytes | None:
        if len(argv) not in (3, 4):
            return None
        prefix = argv[3] if len(argv) == 4 else None
        doomed = [key for key in self._astdb if key[0] == argv[2] and (prefix is None or key[1] == prefix)]
        for key in doomed:
            del self._astdb[key]
        # res_agi.c answers '0' when something was deleted and '1' otherwise; kept as is.
        return b"200 result=0\n" if doomed else b"200 result=1\n"

    def _cmd_database_get(self, argv: list[str]) -> bytes | None:
        if len(argv) != 4:
            return None
        value = self._astdb.get((argv[2], argv[3]))
        return b"200 result=0\n" if value is None else _data_reply(value.encode(_ENCODING, _ERRORS))

    def _cmd_database_put(self, argv: list[str]) -> bytes | None:
        if len(argv) != 5:
            return None
        self._astdb[(argv[2], argv[3])] = argv[4]
        return b"200 result=1\n"

    def _cmd_exec(self, argv: list[str]) -> bytes | None:
        if len(argv) < 2:
            return None
        app, data = argv[1], argv[2] if len(argv) >= 3 else ""
        self._log.append(f"AGI Script Executing Application: ({app}) Options: ({data})")
        if app.lower() not in _APPLICATIONS:
            self._log.append(f"Could not find application ({app})")
            return b"200 result=-2\n"
        if ast_true(self._variables.get("AGIEXECFULL")):
            data = self._substitute(data)
        return f"200 result={self._run_application(app.lower(), data)}\n".encode()

    def _cmd_get_full_variable(self, argv: list[str]) -> bytes | None:
        if len(argv) not in (4, 5):
            return None
        if len(argv) == 5 and argv[4] != self.channel.channel:
            return b"200 result=0\n"
        return _data_reply(self._substitute(argv[3]).encode(_ENCODING, _ERRORS))

    def _cmd_get_variable(self, argv: list[str]) -> bytes | None:
        if len(argv) != 3:
            return None
        name = argv[2]
        value = self._read_function(name) if name.endswith(")") else self._lookup(name)
        if value is None:
            return b"200 result=0\n"
        return _data_reply(value.encode(_ENCODING, _ERRORS)[:GET_VARIABLE_MAX_BYTES])

    def _cmd_hangup(self, argv: list[str]) -> bytes | None:
        if len(argv) == 1:
            self._hang_up(0)
            return b"200 result=1\n"
        if len(argv) == 2:
            if argv[1] != self.channel.channel:
                return b"200 result=-1\n"
            self._hang_up(0)
            return b"200 result=1\n"
        return None

    def _cmd_noop(self, argv: list[str]) -> bytes | None:
        return b"200 result=0\n"

    def _cmd_set_variable(self, argv: list[str]) -> bytes | None:
        if len(argv) != 4:
            return None
        self._set_variable(argv[2], argv[3])
        return b"200 result=1\n"

    def _cmd_verbose(self, argv: list[str]) -> bytes | None:
        if len(argv) < 2:
            return None
        self._log.append(f"{self.channel.app_data}: {argv[1]}")
        return b"200 result=1\n"

    def _cmd_unsimulated(self, argv: list[str]) -> bytes | None:
        # A real command the simulator does not model (audio, DTMF, ...): recorded, answered neutrally.
        self._unsimulated.append(self._line)
        return b"200 result=0\n"

    # ---------------------------------------------------------------------------------------------
    # the channel

    def _answer(self) -> None:
        if self._state is ChannelState.UP:
            return
        self._state = ChannelState.UP
        delay = self.channel.hangup_after_answer
        if delay is not None:
            self._timers.append(asyncio.get_running_loop().call_later(delay, self.hang_up_far_end))

    def _hang_up(self, cause: int) -> None:
        if self._hung_up:
            return
        self._hung_up = True
        self._hangup_cause = cause
        if self._hangup_future is not None and not self._hangup_future.done():
            self._hangup_future.set_result(None)

    def _run_application(self, app: str, data: str) -> int:
        if app == "set":
            name, separator, value = data.partition("=")
            if separator:
                self._set_variable(name, value)
        elif app == "mset":
            # Simplified: Asterisk's argument parser would also honour quotes and brackets here.
            for pair in data.split(",", MSET_MAX_PAIRS - 1):
                name, separator, value = pair.partition("=")
                if separator:
                    self._set_variable(name, value)
        elif app == "hangup":
            self._hang_up(int(data) if data.isascii() and data.isdigit() else 0)
            return -1
        elif app == "answer":
            if self._hung_up:
                return -1
            self._answer()
        elif app == "verbose":
            self._log.append(data.partition(",")[2] or data)
        return 0

    def _set_variable(self, name: str, value: str) -> None:
        if name.endswith(")"):
            function, _, arg = name[:-1].partition("(")
            if function == "CALLERID" and arg.lower() in ("num", "number"):
                self._callerid_num = value
            elif function == "CALLERID" and arg.lower() == "name":
                self._callerid_name = value
            return
        # Inheritance prefixes are not part of the stored name.
        self._variables[name.removeprefix("_").removeprefix("_")] = value

    def _lookup(self, name: str) -> str | None:
        """pbx_retrieve_variable(): built-in names first, then channel variables."""
        channel = self.channel
        match name:
            case "CALLINGPRES":
                return str(calling_presentation(channel))
            case "CALLINGANI2":
                return str(channel.callingani2)
            case "CALLINGTON":
                return str(channel.callington)
            case "CALLINGTNS":
                return str(channel.callingtns)
            case "EXTEN":
                return channel.extension
            case "CONTEXT":
                return channel.context
            case "PRIORITY":
                return str(channel.priority)
            case "CHANNEL":
                return channel.channel
            case "UNIQUEID":
                return channel.uniqueid
            case "HANGUPCAUSE":
                return str(self._hangup_cause)
            case "EPOCH":
                return str(int(time.time()))
        return self._variables.get(name)

    def _read_function(self, expression: str) -> str | None:
        """ast_func_read() for the few functions a gate needs; None is 'function failed'."""
        if expression in self.channel.functions:
            return self.channel.functions[expression]
        function, _, arg = expression[:-1].partition("(")
        key = arg.lower()
        if function == "CALLERID":
            number, name = self._callerid_num or "", self._callerid_name or ""
            values = {"num": number, "number": number, "name": name, "all": f'"{name}" <{number}>'}
            return values.get(key)
        if function == "CHANNEL":
            channel_values = {
                "name": self.channel.channel,
                "uniqueid": self.channel.uniqueid,
                "accountcode": self.channel.accountcode,
                "language": self.channel.language,
                "context": self.channel.context,
                "exten": self.channel.extension,
                "state": _STATE_NAMES[self._state],
            }
            return channel_values.get(key)
        return None

    def _substitute(self, text: str) -> str:
        """pbx_substitute_variables(): expand ``${NAME}``, ``${NAME:offset:length}``, ``${FUNC(args)}``."""
        out: list[str] = []
        position = 0
        while (start := text.find("${", position)) >= 0:
            out.append(text[position:start])
            depth, index = 1, start + 2
            while depth and index < len(text):
                if text[index] == "{":
                    depth += 1
                elif text[index] == "}":
                    depth -= 1
                index += 1
            inner = text[start + 2 : index - 1 if depth == 0 else index]
            if "${" in inner:
                inner = self._substitute(inner)
            out.append(self._expand(inner))
            position = index
        out.append(text[position:])
        return "".join(out)

    def _expand(self, expression: str) -> str:
        if expression.endswith(")"):
            return self._read_function(expression) or ""
        name, *numbers = expression.split(":")
        value = self._lookup(name) or ""
        if not numbers or not all(_INTEGER.fullmatch(number) for number in numbers[:2]):
            return value
        offset = int(numbers[0])
        value = value[max(len(value) + offset, 0) :] if offset < 0 else value[offset:]
        if len(numbers) < 2:
            return value
        length = int(numbers[1])
        return value[:length] if length >= 0 else value[: max(len(value) + length, 0)]

    # ---------------------------------------------------------------------------------------------
    # the wire

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    async def _send(self, data: bytes) -> None:
        at = self._now()
        self._transcript.extend(WireLine(Direction.ASTERISK, at, line) for line in data.split(b"\n")[:-1])
        self._sent += data
        writer = self._writer
        if writer is None or writer.transport.is_closing():
            return
        # Asterisk ignores write errors (ast_agi_send): the server may be gone already.
        with contextlib.suppress(OSError):
            writer.write(data)
            await writer.drain()

    async def _send_hangup_line(self) -> None:
        self._hangup_lines += 1
        await self._send(HANGUP_LINE)

    def _record_received(self, data: bytes) -> None:
        at = self._now()
        self._rx_partial += data
        *lines, rest = self._rx_partial.split(b"\n")
        self._transcript.extend(WireLine(Direction.SERVER, at, bytes(line)) for line in lines)
        self._rx_partial = bytearray(rest)

    async def _close(self) -> None:
        self._duration = self._now()
        for timer in self._timers:
            timer.cancel()
        read_task, self._read_task = self._read_task, None
        if read_task is not None:
            read_task.cancel()
        if self._writer is None:
            return
        self._writer.close()
        try:
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._writer.wait_closed()
            if read_task is not None:
                await asyncio.wait((read_task,))
        finally:
            self._writer.transport.abort()

    def _connect_failed(self, exc: BaseException) -> None:
        self._status = AgiStatus.FAILURE
        if isinstance(exc, TimeoutError):
            timeout_ms = int(self._connect_timeout * 1000)
            self._log.append(
                f"FastAGI connection to '{self.channel.url}' timed out after MAX_AGI_CONNECT ({timeout_ms}) "
                "milliseconds."
            )
        else:
            reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)
            self._log.append(f"Connecting to '{self.host}:{self.port}' failed for url '{self.channel.url}': {reason}")
        self._log.append("Couldn't connect to any host.  FastAGI failed.")

    def _result(self) -> SessionResult:
        transcript = list(self._transcript)
        if self._rx_partial:
            transcript.append(WireLine(Direction.SERVER, self._duration, bytes(self._rx_partial), False))
        variables = dict(self._variables)
        variables["AGISTATUS"] = self._status.value
        return SessionResult(
            channel=self.channel,
            connected=self._connected,
            agi_status=self._status,
            transcript=tuple(transcript),
            sent=bytes(self._sent),
            received=bytes(self._received),
            commands=tuple(self._commands),
            variables=MappingProxyType(variables),
            hangup_lines=self._hangup_lines,
            hung_up=self._hung_up,
            hangup_cause=self._hangup_cause,
            duration=self._duration,
            log=tuple(self._log),
            unsimulated=tuple(self._unsimulated),
        )


async def run_session(
    host: str,
    port: int,
    *,
    channel: SimChannel | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    session_timeout: float = DEFAULT_SESSION_TIMEOUT,
) -> SessionResult:
    """Run one simulated ``AGI()`` call against ``host:port`` and return what happened."""
    call = SimulatedCall(host, port, channel=channel, connect_timeout=connect_timeout, session_timeout=session_timeout)
    return await call.run()


def _data_reply(value: bytes) -> bytes:
    return b"200 result=1 (" + value + b")\n"


_INTEGER = re.compile(r"[+-]?[0-9]{1,9}")
_APPLICATIONS: Final = frozenset({"noop", "set", "mset", "hangup", "answer", "verbose"})

# Usage texts: the first three exactly as traced; the rest are the <para>s of res_agi.c's XML docs, one
# per line with whitespace collapsed, the way the traced ones are built (not captured from Asterisk).
_USAGE_SET_VARIABLE: Final = ("Sets a variable to the current channel.",)
_USAGE_EXEC: Final = (
    "Executes <replaceable>application</replaceable> with given <replaceable>options</replaceable>.",
    "Returns whatever the <replaceable>application</replaceable> returns, or <literal>-2</literal> on "
    "failure to find <replaceable>application</replaceable>.",
    "<note>NOTE:</note> exec does not evaluate dialplan functions and variables unless it is explicitly "
    "enabled by setting the <variable>AGIEXECFULL</variable> variable to <literal>yes</literal>.",
)
_USAGE_GET_VARIABLE: Final = (
    "Returns <literal>0</literal> if <replaceable>variablename</replaceable> is not set. Returns "
    "<literal>1</literal> if <replaceable>variablename</replaceable> is set and returns the variable in "
    "parentheses.",
    "Example return code: 200 result=1 (testvariable)",
)
_USAGE_GET_FULL_VARIABLE: Final = (
    "Evaluates the given <replaceable>expression</replaceable> against the channel specified by "
    "<replaceable>channelname</replaceable>, or the current channel if <replaceable>channelname</replaceable> "
    "is not provided.",
    "Unlike GET VARIABLE, the <replaceable>expression</replaceable> is processed in a manner similar to "
    "dialplan evaluation, allowing complex and built-in variables to be accessed, e.g. <literal>The time is "
    "${EPOCH}</literal>",
    "Returns <literal>0</literal> if no channel matching <replaceable>channelname</replaceable> exists, "
    "<literal>1</literal> otherwise.",
    "Example return code: 200 result=1 (The time is 1578493800)",
)
_USAGE_VERBOSE: Final = (
    "Sends <replaceable>message</replaceable> to the console via verbose message system. "
    "<replaceable>level</replaceable> is the verbose level (1-4). Always returns <literal>1</literal>",
)
_USAGE_HANGUP: Final = ("Hangs up the specified channel. If no channel name is given, hangs up the current channel",)
_USAGE_CHANNEL_STATUS: Final = (
    "Returns the status of the specified <replaceable>channelname</replaceable>. If no channel name is "
    "given then returns the status of the current channel.",
    "Return values:",
)
_USAGE_DATABASE: Final = ("Database access (usage text not captured).",)

_C = _Command
_S = SimulatedCall
_U = SimulatedCall._cmd_unsimulated  # a real command the simulator does not model
# res_agi.c's commands[], in order: words, runs on a dead channel, handler, usage.
_COMMANDS: Final[tuple[_Command, ...]] = (
    _C(("answer",), False, _S._cmd_answer),
    _C(("asyncagi", "break"), True, _S._cmd_asyncagi_break),
    _C(("channel", "status"), False, _S._cmd_channel_status, _USAGE_CHANNEL_STATUS),
    _C(("database", "del"), True, _S._cmd_database_del, _USAGE_DATABASE),
    _C(("database", "deltree"), True, _S._cmd_database_deltree, _USAGE_DATABASE),
    _C(("database", "get"), True, _S._cmd_database_get, _USAGE_DATABASE),
    _C(("database", "put"), True, _S._cmd_database_put, _USAGE_DATABASE),
    _C(("exec",), True, _S._cmd_exec, _USAGE_EXEC),
    _C(("get", "data"), False, _U),
    _C(("get", "full", "variable"), True, _S._cmd_get_full_variable, _USAGE_GET_FULL_VARIABLE),
    _C(("get", "option"), False, _U),
    _C(("get", "variable"), True, _S._cmd_get_variable, _USAGE_GET_VARIABLE),
    _C(("hangup",), False, _S._cmd_hangup, _USAGE_HANGUP),
    _C(("noop",), True, _S._cmd_noop),
    _C(("receive", "char"), False, _U),
    _C(("receive", "text"), False, _U),
    _C(("record", "file"), False, _U),
    _C(("say", "alpha"), False, _U),
    _C(("say", "digits"), False, _U),
    _C(("say", "number"), False, _U),
    _C(("say", "phonetic"), False, _U),
    _C(("say", "date"), False, _U),
    _C(("say", "time"), False, _U),
    _C(("say", "datetime"), False, _U),
    _C(("send", "image"), False, _U),
    _C(("send", "text"), False, _U),
    _C(("set", "autohangup"), False, _U),
    _C(("set", "callerid"), False, _U),
    _C(("set", "context"), False, _U),
    _C(("set", "extension"), False, _U),
    _C(("set", "music"), False, _U),
    _C(("set", "priority"), False, _U),
    _C(("set", "variable"), True, _S._cmd_set_variable, _USAGE_SET_VARIABLE),
    _C(("stream", "file"), False, _U),
    _C(("control", "stream", "file"), False, _U),
    _C(("tdd", "mode"), False, _U),
    _C(("verbose",), True, _S._cmd_verbose, _USAGE_VERBOSE),
    _C(("wait", "for", "digit"), False, _U),
    _C(("speech", "create"), False, _U),
    _C(("speech", "set"), False, _U),
    _C(("speech", "destroy"), True, _U),
    _C(("speech", "load", "grammar"), False, _U),
    _C(("speech", "unload", "grammar"), True, _U),
    _C(("speech", "activate", "grammar"), False, _U),
    _C(("speech", "deactivate", "grammar"), False, _U),
    _C(("speech", "recognize"), False, _U),
)


_BY_FIRST_WORD: Final[Mapping[str, tuple[_Command, ...]]] = MappingProxyType(
    {word: tuple(c for c in _COMMANDS if c.words[0] == word) for word in dict.fromkeys(c.words[0] for c in _COMMANDS)}
)


def _find_command(argv: list[str]) -> _Command | None:
    """find_command(argv, 0): every command word must match (ASCII case-insensitively); more argv is args."""
    if not argv or not argv[0].isascii():
        return None
    for command in _BY_FIRST_WORD.get(argv[0].lower(), ()):
        if len(argv) < len(command.words):
            continue
        if all(arg.isascii() and arg.lower() == word for arg, word in zip(argv, command.words, strict=False)):
            return command
    return None
