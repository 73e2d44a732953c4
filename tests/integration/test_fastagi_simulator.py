"""The FastAGI Asterisk simulator, driven by tiny FastAGI servers on loopback.

First every traced conversation is replayed: a scripted server sends exactly the ``<<<`` lines and must
receive exactly the ``>>>`` bytes, and the outcome (AGISTATUS, dialplan, variables, Asterisk log) must
match the ``### LOG`` lines. Then the behaviours a gatekeeper server depends on, one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Generic, TypeVar

import pytest

from gatekeeper.contract import GATEKEEPER_CAMPAIGN, GATEKEEPER_DECISION_ID, GATEKEEPER_REASON, GATEKEEPER_RESULT
from gatekeeper.fastagi.protocol import (
    AgiEnvironment,
    DeadChannel,
    EnvironmentParser,
    Hangup,
    InvalidCommand,
    Reply,
    ReplyParser,
    Success,
    UsageError,
    exec_mset,
    get_variable,
    parse_environment,
    set_variable,
)
from gatekeeper.simulator.fastagi import (
    AgiStatus,
    Direction,
    SimChannel,
    SimulatedCall,
    SimulatorTimeout,
    environment_block,
    run_session,
)
from tests.asterisk_sim.traces import Conversation, Kind, conversation, load_trace

pytestmark = pytest.mark.integration

WAIT = 5.0  # upper bound for every wait; nothing here sleeps to synchronise
T = TypeVar("T")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[T]]


class ScriptedServer(Generic[T]):
    """A FastAGI server on 127.0.0.1 (free port) running ``handler`` per connection; keeps its outcomes."""

    def __init__(self, handler: Handler[T]) -> None:
        self._handler = handler
        self.port = 0
        self.outcomes: asyncio.Queue[asyncio.Future[T]] = asyncio.Queue()

    async def on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        outcome: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.outcomes.put_nowait(outcome)
        try:
            outcome.set_result(await self._handler(reader, writer))
        except Exception as exc:
            outcome.set_exception(exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def outcome(self) -> T:
        """What the handler of the next finished connection returned (or raised)."""
        future = await asyncio.wait_for(self.outcomes.get(), WAIT)
        return await asyncio.wait_for(future, WAIT)


@contextlib.asynccontextmanager
async def fastagi_server(handler: Handler[T]) -> AsyncIterator[ScriptedServer[T]]:
    scripted = ScriptedServer(handler)
    server = await asyncio.start_server(scripted.on_connect, "127.0.0.1", 0)
    scripted.port = server.sockets[0].getsockname()[1]
    try:
        yield scripted
    finally:
        server.close()
        await server.wait_closed()


async def readline(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readline(), WAIT)


async def read_environment(reader: asyncio.StreamReader) -> bytes:
    block = bytearray()
    while (line := await readline(reader)) not in (b"\n", b""):
        block += line
    return bytes(block + line)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), WAIT)


class AgiClient:
    """The server side of a session, speaking through gatekeeper.fastagi.protocol."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.replies = ReplyParser()
        self.hangups = 0

    async def environment(self) -> AgiEnvironment:
        parser = EnvironmentParser()
        while (env := parser.feed_line(await readline(self.reader))) is None:
            pass
        return env

    async def outcome(self) -> Reply:
        """The next outcome, HANGUP lines included."""
        while (reply := self.replies.feed_line(await readline(self.reader))) is None:
            pass
        return reply

    async def reply(self) -> Reply:
        """The next reply to a command; HANGUP lines on the way are counted."""
        while isinstance(reply := await self.outcome(), Hangup):
            self.hangups += 1
        return reply

    async def command(self, line: bytes) -> Reply:
        self.writer.write(line)
        return await self.reply()


def is_subsequence(needles: tuple[str, ...], haystack: tuple[str, ...]) -> bool:
    remaining = iter(haystack)
    return all(any(needle == item for item in remaining) for needle in needles)


def pipelining_channel(**overrides: Any) -> SimChannel:
    """The call of fastagi-pipelining.txt: CallerID "Acme Sales" <+31201234567> (its env block is elided)."""
    values: dict[str, Any] = {
        "url": "agi://127.0.0.1:4574/check",
        "channel": "Local/0612340002@outbound-trace-0000000c;2",
        "context": "outbound-trace",
        "extension": "0612340002",
        "callerid_num": "+31201234567",
        "callerid_name": "Acme Sales",
    }
    values.update(overrides)
    return SimChannel(**values)


# --------------------------------------------------------------------------------------------------
# Replaying the traces


async def replay(
    conv: Conversation, call: SimulatedCall, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[bytes, bytes]:
    """Play the server's side of ``conv``; returns (environment block, everything read after it)."""
    environment = await read_environment(reader)
    received = bytearray()
    probe = False
    for event in conv.after_environment:
        if event.kind is Kind.NOTE:
            if "half-closes" in event.text:
                writer.write_eof()
            probe = probe or "probe:" in event.text
        elif event.kind is Kind.SERVER:
            if probe:  # the traced server waited seconds for the far end to hang up; we wait for the event
                await asyncio.wait_for(call.channel_dead.wait(), WAIT)
                probe = False
            writer.write(event.data)
        else:
            received += await readline(reader)
    if any("EOF from Asterisk" in note for note in conv.notes()):
        assert await read_to_eof(reader) == b""
    return environment, bytes(received)


REPLAYS: dict[tuple[str, str], dict[str, Any]] = {
    ("fastagi-session.txt", "Session 1:"): {},
    ("fastagi-session.txt", "Session 2:"): {},
    ("fastagi-hangup.txt", "Case 1:"): {"hangup_after_answer": 0.0},
    ("fastagi-hangup.txt", "Case 2:"): {"hangup_after_answer": 0.0},
    ("fastagi-hangup.txt", "Case 3:"): {"hangup_after_answer": 0.0, "agi_exit_on_hangup": True},
    ("fastagi-hangup.txt", "Case 4:"): {"hangup_after_answer": 0.0, "agi_sighup": False},
    ("fastagi-hangup.txt", "Case 5:"): {},
    ("fastagi-hangup.txt", "Case 6:"): {},
    ("fastagi-close.txt", "Half-close:"): {},
    ("fastagi-close.txt", "Early close:"): {},
    ("fastagi-pipelining.txt", "Experiment 2:"): {},
}
# Replayed by dedicated tests below.
SPECIAL = {
    ("fastagi-close.txt", "Close on accept:"),
    ("fastagi-close.txt", "No listener:"),
    ("fastagi-pipelining.txt", "Experiment 1:"),
}


def test_every_traced_fastagi_conversation_is_replayed() -> None:
    titled = {
        (conv.file, conv.title)
        for name in ("fastagi-session.txt", "fastagi-hangup.txt", "fastagi-close.txt", "fastagi-pipelining.txt")
        for conv in load_trace(name)
    }
    covered = {
        (file, title)
        for file, title in titled
        for known in (*REPLAYS, *SPECIAL)
        if known[0] == file and title.startswith(known[1])
    }
    assert covered == titled
    assert len(titled) == len(REPLAYS) + len(SPECIAL)


@pytest.mark.parametrize(("file", "title"), REPLAYS, ids=[f"{f}:{t}" for f, t in REPLAYS])
async def test_replay_trace_byte_for_byte(file: str, title: str) -> None:
    conv = conversation(file, title)
    overrides = REPLAYS[(file, title)]
    channel = (
        pipelining_channel(**overrides)
        if conv.environment_elided or not conv.environment
        else conv.sim_channel(**overrides)
    )
    calls: list[SimulatedCall] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[bytes, bytes]:
        return await replay(conv, calls[0], reader, writer)

    async with fastagi_server(handler) as server:
        calls.append(SimulatedCall("127.0.0.1", server.port, channel=channel, session_timeout=WAIT))
        result = await calls[0].run()
        environment, received = await server.outcome()

    assert received == conv.asterisk_bytes(include_environment=False)
    assert result.lines(Direction.SERVER) == tuple(line.encode() for line in conv.lines(Kind.SERVER))
    stamps = [line.at for line in result.transcript]
    assert stamps == sorted(stamps)
    if conv.environment and not conv.environment_elided:
        assert environment == b"".join(event.data for event in conv.environment)
    else:  # the pipelining trace only shows a few lines of its block
        lines = environment.split(b"\n")
        for shown in (
            b"agi_network: yes",
            b"agi_network_script: check",
            b"agi_callerid: +31201234567",
            b"agi_callingpres: 0",
        ):
            assert shown in lines
        return
    assert result.agi_status == conv.agi_status()
    assert result.dialplan_continues == conv.dialplan_continued()
    assert result.variables.get(GATEKEEPER_RESULT, "") == conv.gatekeeper_result()
    if result.agi_status is AgiStatus.HANGUP:
        assert result.hangup_cause == conv.hangupcause()
    assert is_subsequence(conv.log_messages("res_agi.c"), result.log)
    assert result.unsimulated == ()


async def test_close_on_accept_is_success() -> None:
    conv = conversation("fastagi-close.txt", "Close on accept:")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return None

    async with fastagi_server(handler) as server:
        result = await run_session("127.0.0.1", server.port, session_timeout=WAIT)
        await server.outcome()
    assert conv.agi_status() == "SUCCESS"
    assert result.agi_status is AgiStatus.SUCCESS
    assert result.dialplan_continues
    assert result.commands == ()


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, never listening) for as long as it is held."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_no_listener_is_failure_and_the_dialplan_continues() -> None:
    conv = conversation("fastagi-close.txt", "No listener:")
    channel = SimChannel(url="agi://127.0.0.1:4574/check")
    with closed_port() as port:
        result = await run_session("127.0.0.1", port, channel=channel)
    assert conv.agi_status() == "FAILURE"
    assert conv.dialplan_continued()
    assert result.agi_status is AgiStatus.FAILURE
    assert result.dialplan_continues
    assert not result.connected
    assert result.transcript == ()
    expected = tuple(
        m.replace("'127.0.0.1:4574' failed", f"'127.0.0.1:{port}' failed") for m in conv.log_messages("res_agi.c")
    )
    assert result.log == expected
    assert result.variables["AGISTATUS"] == "FAILURE"


# --------------------------------------------------------------------------------------------------
# Pipelining (fastagi-pipelining.txt, experiment 1)


def traced_pipeline() -> tuple[bytes, bytes]:
    conv = conversation("fastagi-pipelining.txt", "Experiment 1:")
    commands = b"".join(event.data for event in conv.events if event.kind is Kind.SERVER)
    assert commands.count(b"\n") == 3
    return commands, conv.asterisk_bytes(include_environment=False)


async def test_pipelined_commands_wait_in_the_buffer_until_the_server_closes() -> None:
    commands, traced_reply = traced_pipeline()
    calls: list[SimulatedCall] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        await read_environment(reader)
        writer.write(commands)  # all three before reading any reply
        first = await readline(reader)
        await asyncio.wait_for(calls[0].stalled.wait(), WAIT)  # Asterisk now waits, two commands unrun
        return first

    async with fastagi_server(handler) as server:
        calls.append(SimulatedCall("127.0.0.1", server.port, channel=pipelining_channel(), session_timeout=WAIT))
        result = await calls[0].run()
        first = await server.outcome()

    assert first == traced_reply == b"200 result=1\n"
    assert result.pipelined_commands == tuple(commands.split(b"\n")[1:3])
    assert [(c.pipelined, c.after_eof) for c in result.commands] == [(False, False), (True, True), (True, True)]
    assert result.variables[GATEKEEPER_RESULT] == "BLOCK"
    assert result.variables[GATEKEEPER_REASON] == "no-basis"
    assert result.variables[GATEKEEPER_DECISION_ID] == "d1"
    assert result.agi_status is AgiStatus.SUCCESS


async def test_pipelining_holds_the_call_until_the_server_gives_up() -> None:
    commands, _ = traced_pipeline()
    patience = 0.2  # the traced server gave up after 2 s and the AGI lasted 2.005 s

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await read_environment(reader)
        writer.write(commands)
        await readline(reader)
        try:
            await asyncio.wait_for(reader.readline(), patience)
        except TimeoutError:
            return True
        return False

    async with fastagi_server(handler) as server:
        result = await run_session("127.0.0.1", server.port, channel=pipelining_channel(), session_timeout=WAIT)
        second_reply_never_came = await server.outcome()

    assert second_reply_never_came
    assert result.duration >= patience
    assert len(result.pipelined_commands) == 2
    assert result.variables[GATEKEEPER_DECISION_ID] == "d1"


async def test_a_later_command_gets_the_stale_replies_of_pipelined_ones() -> None:
    commands, _ = traced_pipeline()
    calls: list[SimulatedCall] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[bytes]:
        await read_environment(reader)
        writer.write(commands)
        await readline(reader)
        await asyncio.wait_for(calls[0].stalled.wait(), WAIT)
        writer.write(b"NOOP\n")
        return [await readline(reader) for _ in range(3)]

    async with fastagi_server(handler) as server:
        calls.append(SimulatedCall("127.0.0.1", server.port, channel=pipelining_channel(), session_timeout=WAIT))
        result = await calls[0].run()
        after_noop = await server.outcome()

    # The first line after NOOP answers SET VARIABLE GATEKEEPER_REASON, not NOOP.
    assert after_noop == [b"200 result=1\n", b"200 result=1\n", b"200 result=0\n"]
    assert [(c.pipelined, c.after_eof) for c in result.commands] == [
        (False, False),
        (True, False),
        (True, False),
        (False, False),
    ]


async def test_after_a_half_close_the_pipelined_replies_and_hangup_still_arrive() -> None:
    commands, _ = traced_pipeline()
    calls: list[SimulatedCall] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        await read_environment(reader)
        writer.write(commands)
        await readline(reader)
        await asyncio.wait_for(calls[0].stalled.wait(), WAIT)
        writer.write_eof()
        return await read_to_eof(reader)

    async with fastagi_server(handler) as server:
        calls.append(SimulatedCall("127.0.0.1", server.port, channel=pipelining_channel(), session_timeout=WAIT))
        await calls[0].run()
        rest = await server.outcome()
    assert rest == b"200 result=1\n200 result=1\nHANGUP\n"


# --------------------------------------------------------------------------------------------------
# AGISTATUS and the HANGUP line


async def test_close_right_after_the_environment_is_success() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> AgiEnvironment:
        return await AgiClient(reader, writer).environment()

    async with fastagi_server(handler) as server:
        result = await run_session("127.0.0.1", server.port, session_timeout=WAIT)
        env = await server.outcome()
    assert env.extension == "0612345678"
    assert result.agi_status is AgiStatus.SUCCESS
    assert result.dialplan_continues
    assert result.hangup_lines == 1  # written at the end, to a closed socket
    assert result.variables["AGISTATUS"] == "SUCCESS"


async def test_far_end_hangup_sends_one_hangup_line_and_commands_still_answer() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[Reply | bytes]:
        agi = AgiClient(reader, writer)
        await agi.environment()
        writer.write(b"ANSWER\n")
        seen: list[Reply | bytes] = [await agi.outcome(), await agi.outcome()]
        seen.append(await agi.command(set_variable(GATEKEEPER_RESULT, "BLOCK")))
        seen.append(await agi.command(b"ANSWER\n"))
        writer.write_eof()
        seen.append(await read_to_eof(reader))
        return seen

    channel = SimChannel(hangup_after_answer=0.0)
    async with fastagi_server(handler) as server:
        result = await run_session("127.0.0.1", server.port, channel=channel, session_timeout=WAIT)
        seen = await server.outcome()
    assert seen == [Success(0), Hangup(), Success(1), DeadChannel(), b"HANGUP\n"]
    assert result.agi_status is AgiStatus.HANGUP
    assert not result.dialplan_continues
    assert result.hangup_lines == 2
    assert result.hangup_cause == 16
    assert result.variables[GATEKEEPER_RESULT] == "BLOCK"


async def test_far_end_can_hang_up_right_after_connect() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Reply:
        agi = AgiClient(reader, writer)
        await agi.environment()
        return await agi.outcome()

    channel = SimChannel(hangup_after_connect=0.0, hangup_cause=17)
    async with fastagi_server(handler) as server:
        result = await run_session("127.0.0.1", server.port, channel=channel, session_timeout=WAIT)
        assert await server.outcome() == Hangup()
    assert result.agi_status is AgiStatus.HANGUP
    assert result.hangup_cause == 17
    assert result.variables["AGISTATUS"] == "HANGUP"


async def test_far_end_can_hang_up_on_demand_before_answer() -> None:
    calls: list[SimulatedCall] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[Reply]:
        agi = AgiClient(reader, writer)
        await agi.environment()
        assert await agi.command(b"CHANNEL STATUS\n") == Success(4)
        calls[0].hang_up_far_end(cause=19)
        return [
            await agi.outcome(),
            await agi.command(b"CHANNEL STATUS\n"),
            await agi.command(get_variable("HANGUPCAUSE")),
        ]

    async with fastagi_server(handler) as server:
        calls.append(SimulatedCall("127.0.0.1", server.port, session_timeout=WAIT))
        result = await calls[0].run()
        seen = await server.outcome()
    assert seen == [Hangup(), DeadChannel(), Success(1, "19")]
    assert result.agi_status is AgiStatus.HANGUP


async def test_agiexitonhangup_sends_hangup_twice_then_closes() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        agi = AgiClient(reader, writer)
        await agi.environment()
        assert await agi.command(b"ANSWER\n") == Success(0)
        return await read_to_eof(reader)

    channel = SimChannel(hangup_after_answer=0.0, agi_exit_on_hangup=True)
    async with fastagi_server(handler) as server:
        result = await run_session("127.0.0.1", server.port, channel=channel, session_timeout=WAIT)
        rest = await server.outcome()
    assert rest == b"HANGUP\nHANGUP\n"
    assert result.hangup_lines == 2
    assert result.agi_status is AgiStatus.HANGUP
    assert not any("completed" in line for line in result.log)


async def test_agisighup_no_never_sends_hangup_and_only_511_tells() -> None:
    calls: list[SimulatedCall] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[Reply | bytes]:
        agi = AgiClient(reader, writer)
        await agi.environment()
        seen: list[Reply | bytes] = [await agi.command(b"ANSWER\n")]
        await asyncio.wait_for(calls[0].channel_dead.wait(), WAIT)
        seen += [await agi.command(get_variable("AGISIGHUP")), await agi.command(b"ANSWER\n")]
        seen.append(await agi.command(b"CHANNEL STATUS\n"))
        writer.write_eof()
        seen.append(await read_to_eof(reader))
        return seen

    channel = SimChannel(hangup_after_answer=0.0, agi_sighup=False)
    async with fastagi_server(handler) as server:
        calls.append(SimulatedCall("127.0.0.1", server.port, channel=channel, session_timeout=WAIT))
        result = await calls[0].run()
        seen = await server.outcome()
    assert seen == [Success(0), Success(1, "no"), DeadChannel(), DeadChannel(), b""]
    assert result.hangup_lines == 0
    assert b"HANGUP" not in result.sent
    assert result.agi_status is AgiStatus.HANGUP


async def test_hangup_command_replies_then_sends_the_hangup_line() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[Reply]:
        agi = AgiClient(reader, writer)
        await agi.environment()
        writer.write(b"HANGUP\n")
        return [await agi.outcome(), await agi.outcome()]

    async with fastagi_server(handler) as server:
        result = await run_session("127.0.0.1", server.port, session_timeout=WAIT)
        seen = await server.outcome()
    assert seen == [Success(1), Hangup()]
    assert result.agi_status is AgiStatus.HANGUP
    assert result.hangup_cause == 0


DEAD_CHANNEL_COMMANDS: list[tuple[bytes, Reply]] = [
    (b"GET VARIABLE GATEKEEPER_CAMPAIGN\n", Success(1, "acme")),
    (b'GET FULL VARIABLE "${EXTEN}"\n', Success(1, "0612345678")),
    (b'SET VARIABLE GATEKEEPER_RESULT "after"\n', Success(1)),
    (b'VERBOSE "dead" 1\n', Success(1)),
    (b'EXEC NoOp "x"\n', Success(0)),
    (b"NOOP\n", Success(0)),
    (b"DATABASE PUT gk k v\n", Success(1)),
    (b"DATABASE GET gk k\n", Success(1, "v")),
    (b"ASYNCAGI BREAK\n", Success(0)),
    (b"ANSWER\n", DeadChannel()),
    (b"CHANNEL STATUS\n", DeadChannel()),
    (b'STREAM FILE beep ""\n', DeadChannel()),
    (b"HANGUP\n", DeadChannel()),
    (b"WAIT FOR DIGIT 100\n", DeadChannel()),
    (b'SAY DIGITS 123 ""\n', DeadChannel()),
    (b"SET CALLERID 123\n", DeadChannel()),
    (b"GET DATA beep\n", DeadChannel()),
    (b"FOO BAR\n", InvalidCommand()),
]


async def test_which_commands_work_on_a_dead_channel() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[Reply]:
        agi = AgiClient(reader, writer)
        await agi.environment()
        assert await agi.command(b'EXEC Hangup "21"\n') == Success(-1)
        assert await agi.outcome() == Hangup()
        return [await agi.command(line) for line, _ in DEAD_CHANNEL_COMMANDS]

    async with fastagi_server(handler) as server:
        result = await run_session("127.0.0.1", server.port, session_timeout=WAIT)
        replies = await server.outcome()
    assert replies == [reply for _, reply in DEAD_CHANNEL_COMMANDS]
    assert result.hangup_cause == 21
    assert all(command.dead for command in result.commands[1:])


# --------------------------------------------------------------------------------------------------
# Commands on a live channel


EXEC_USAGE = UsageError(
    "Executes <replaceable>application</replaceable> with given <replaceable>options</replaceable>.\n"
    "Returns whatever the <replaceable>application</replaceable> returns, or <literal>-2</literal> on failure "
    "to find <replaceable>application</replaceable>.\n"
    "<note>NOTE:</note> exec does not evaluate dialplan functions and variables unless it is explicitly "
    "enabled by setting the <variable>AGIEXECFULL</variable> variable to <literal>yes</literal>."
)
SET_USAGE = UsageError("Sets a variable to the current channel.")

LIVE_COMMANDS: list[tuple[bytes, Reply]] = [
    (b"get variable GATEKEEPER_CAMPAIGN\n", Success(1, "acme")),
    (b'"GET" "VARIABLE" "GATEKEEPER_CAMPAIGN"\n', Success(1, "acme")),
    (b"GET VARIABLE NOT_SET\n", Success(0)),
    (b"GET VARIABLE CALLERID(num)\n", Success(1, "+31201234567")),
    (b"GET VARIABLE CALLERID(name)\n", Success(1, "Acme Sales")),
    (b"GET VARIABLE NOSUCHFUNC(x)\n", Success(0)),
    (b"GET VARIABLE DB(gk/x)\n", Success(1, "from-db")),
    (b"GET VARIABLE EXTEN\n", Success(1, "0612345678")),
    (b"GET VARIABLE UNIQUEID\n", Success(1, "1795860072.69")),
    (b"GET VARIABLE HANGUPCAUSE\n", Success(1, "0")),
    (
        b'GET FULL VARIABLE "${EXTEN:-4}/${EXTEN:0:2}/${CALLERID(num)}/${UNSET}."\n',
        Success(1, "5678/06/+31201234567/."),
    ),
    (b'GET FULL VARIABLE "${X}" Local/other;2\n', Success(0)),
    (b'SET VARIABLE GK_LITERAL "${EXTEN}"\n', Success(1)),
    (b"GET VARIABLE GK_LITERAL\n", Success(1, "${EXTEN}")),
    (b"SET VARIABLE GK_TOO many args\n", SET_USAGE),
    (b"SET VARIABLE GK_TOO_FEW\n", SET_USAGE),
    (b'SET VARIABLE __GK_INHERIT "x"\n', Success(1)),
    (b"GET VARIABLE GK_INHERIT\n", Success(1, "x")),
    (exec_mset([(GATEKEEPER_RESULT, "BLOCK"), (GATEKEEPER_REASON, "no-basis")]), Success(0)),
    (get_variable(GATEKEEPER_REASON), Success(1, "no-basis")),
    (b'EXEC Set "GK_SET=a=b"\n', Success(0)),
    (b"GET VARIABLE GK_SET\n", Success(1, "a=b")),
    (b'EXEC Set "${EXTEN}=x"\n', Success(0)),
    (b"GET VARIABLE ${EXTEN}\n", Success(1, "x")),
    (b'EXEC NoSuchApp "x"\n', Success(-2)),
    (b"EXEC\n", EXEC_USAGE),
    (
        b"VERBOSE\n",
        UsageError(
            "Sends <replaceable>message</replaceable> to the console via verbose message system. "
            "<replaceable>level</replaceable> is the verbose level (1-4). Always returns <literal>1</literal>"
        ),
    ),
    (b"VERBOSE unquoted words 1\n", Success(1)),
    (b"NOOP with args\n", Success(0)),
    (b"\n", InvalidCommand()),
    (b"   \n", InvalidCommand()),
    (b"GET\n", InvalidCommand()),
    (b"CHANNEL STATUS\n", Success(4)),
    (b"CHANNEL STATUS Local/0612345678@outbound-00000022;2\n", Success(4)),
    (b"CHANNEL STATUS Local/other;2\n", Success(-1)),
    (b"ANSWER\n", Success(0)),
    (b"CHANNEL STATUS\n", Success(6)),
    (b"GET VARIABLE CHANNEL(state)\n", Success(1, "Up")),
    (b"HANGUP Local/other;2\n", Success(-1)),
    (b"DATABASE DEL gk nothing\n", Success(0)),
    (b'STREAM FILE beep ""\n', Success(0)),
]


async def test_commands_on_a_live_channel() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[Reply]:
        agi = AgiClient(reader, writer)
        await agi.environment()
        return [await agi.command(line) for line, _ in LIVE_COMMANDS]

    channel = SimChannel(callerid_num="+31201234567", callerid_name="Acme Sales", functions={"DB(gk/x)": "from-db"})
    async with fastagi_server(handler) as server:
        result = await run_session("127.0.0.1", server.port, channel=channel, session_timeout=WAIT)
        replies = await server.outcome()
    for (line, expected), reply in zip(LIVE_COMMANDS, replies, strict=True):
        assert reply == expected, line
    assert result.unsimulated == (b'STREAM FILE beep ""',)
    assert "AGI Script Executing Application: (NoSuchApp) Options: (x)" in result.log
    assert "Could not find application (NoSuchApp)" in result.log
    assert f"{channel.url}: unquoted" in result.log
    assert result.agi_status is AgiStatus.SUCCESS


async def test_agiexecfull_expands_exec_data() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[Reply]:
        agi = AgiClient(reader, writer)
        await agi.environment()
        return [
            await agi.command(b'EXEC Set "GK_EXPANDED=${EXTEN}"\n'),
            await agi.command(b"GET VARIABLE GK_EXPANDED\n"),
        ]

    channel = SimChannel(variables={"AGIEXECFULL": "yes"})
    async with fastagi_server(handler) as server:
        await run_session("127.0.0.1", server.port, channel=channel, session_timeout=WAIT)
        replies = await server.outcome()
    assert replies == [Success(0), Success(1, "0612345678")]


async def test_an_over_long_line_runs_its_tail_as_a_second_command() -> None:
    prefix = 'SET VARIABLE GK_LONG "'
    tail = ' EXEC Set GK_INJECTED=1"'
    value = "a" * (2047 - len(prefix)) + tail[:-1]
    with pytest.raises(ValueError, match="separate command"):
        set_variable("GK_LONG", value)  # which is why format_command refuses such lines

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[Reply]:
        agi = AgiClient(reader, writer)
        await agi.environment()
        first = await agi.command((prefix + value + '"\n').encode())
        # The tail waits in Asterisk's buffer and runs with the next bytes; its reply comes first.
        writer.write(b"NOOP\n")
        return [first, await agi.reply(), await agi.reply()]

    async with fastagi_server(handler) as server:
        result = await run_session("127.0.0.1", server.port, session_timeout=WAIT)
        replies = await server.outcome()
    assert replies == [Success(1), Success(0), Success(0)]
    assert len(result.commands[0].line) == 2047
    assert result.commands[1].line == tail.encode()
    assert result.commands[1].pipelined
    assert result.variables["GK_INJECTED"] == "1"


async def test_a_line_starting_with_failure_ends_the_agi_with_failure() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        await read_environment(reader)
        writer.write(b"FAILURE to launch\n")
        return await read_to_eof(reader)

    async with fastagi_server(handler) as server:
        result = await run_session("127.0.0.1", server.port, session_timeout=WAIT)
        rest = await server.outcome()
    assert rest == b"HANGUP\n"
    assert result.agi_status is AgiStatus.FAILURE
    assert result.dialplan_continues


async def test_a_partial_last_line_runs_when_the_server_closes() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        await read_environment(reader)
        writer.write(set_variable(GATEKEEPER_RESULT, "ALLOW")[:-1])
        writer.write_eof()
        return await read_to_eof(reader)

    async with fastagi_server(handler) as server:
        result = await run_session("127.0.0.1", server.port, session_timeout=WAIT)
        rest = await server.outcome()
    assert rest == b"200 result=1\nHANGUP\n"
    assert result.variables[GATEKEEPER_RESULT] == "ALLOW"
    assert result.commands[0].after_eof


async def test_a_silent_server_hits_the_session_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        await read_environment(reader)
        return await read_to_eof(reader)  # until the simulator gives up and closes

    async with fastagi_server(handler) as server:
        with pytest.raises(SimulatorTimeout) as info:
            await run_session("127.0.0.1", server.port, session_timeout=0.2)
        assert await server.outcome() == b""
    assert info.value.result.duration >= 0.2
    assert info.value.result.commands == ()


# --------------------------------------------------------------------------------------------------
# The environment block


@pytest.mark.parametrize(
    ("url", "script_line"),
    [
        (
            "agi://127.0.0.1:4573/check?campaign=acme&number=0612345678",
            b"agi_network_script: check?campaign=acme&number=0612345678",
        ),
        ("agi://127.0.0.1:4573/check", b"agi_network_script: check"),
        ("agi://127.0.0.1:4573/", None),
        ("agi://127.0.0.1:4573", None),
        ("agi://gk", None),
    ],
)
def test_environment_block_in_asterisks_order(url: str, script_line: bytes | None) -> None:
    channel = SimChannel(url=url, args=("0612345678", "second arg"), accountcode="")
    block = environment_block(channel)
    lines = block.split(b"\n")
    assert block.endswith(b"agi_arg_1: 0612345678\nagi_arg_2: second arg\n\n")
    assert b"\r" not in block
    assert lines[0] == b"agi_network: yes"
    assert (lines[1] == script_line) if script_line else lines[1].startswith(b"agi_request: ")
    keys = [line.split(b": ")[0] for line in lines if line and not line.startswith(b"agi_network")]
    assert keys[:20] == [
        b"agi_" + key
        for key in (
            b"request",
            b"channel",
            b"language",
            b"type",
            b"uniqueid",
            b"version",
            b"callerid",
            b"calleridname",
            b"callingpres",
            b"callingani2",
            b"callington",
            b"callingtns",
            b"dnid",
            b"rdnis",
            b"context",
            b"extension",
            b"priority",
            b"enhanced",
            b"accountcode",
            b"threadid",
        )
    ]
    assert b"agi_accountcode: \n" in block
    env = parse_environment(block)
    assert env.request == url
    assert env.args == ("0612345678", "second arg")
    assert env.network_script == (script_line[len(b"agi_network_script: ") :].decode() if script_line else None)


def test_environment_block_with_caller_id_and_accountcode() -> None:
    env = parse_environment(
        environment_block(SimChannel(callerid_num="+31201234567", callerid_name="Acme Sales", accountcode="acme"))
    )
    assert (env.callerid, env.calleridname, env.callingpres, env.accountcode) == (
        "+31201234567",
        "Acme Sales",
        0,
        "acme",
    )


# --------------------------------------------------------------------------------------------------
# Many calls at once


async def test_hundreds_of_concurrent_sessions() -> None:
    sessions = 300

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        agi = AgiClient(reader, writer)
        env = await agi.environment()
        campaign = await agi.command(get_variable(GATEKEEPER_CAMPAIGN))
        assert campaign == Success(1, "acme")
        reply = await agi.command(exec_mset([(GATEKEEPER_RESULT, "ALLOW"), (GATEKEEPER_DECISION_ID, env.uniqueid)]))
        assert reply == Success(0)

    async with fastagi_server(handler) as server:
        channels = [SimChannel(uniqueid=f"1795860072.{n}") for n in range(sessions)]
        results = await asyncio.wait_for(
            asyncio.gather(*(run_session("127.0.0.1", server.port, channel=channel) for channel in channels)), WAIT * 2
        )
        for _ in range(sessions):
            await server.outcome()
    assert all(result.agi_status is AgiStatus.SUCCESS for result in results)
    assert [result.variables[GATEKEEPER_DECISION_ID] for result in results] == [c.uniqueid for c in channels]
