"""`gatekeeper-agi`: the classic AGI script, for small PBXs: `AGI(gatekeeper-agi,campaign=ID[,number=N])`.

Asterisk starts one process per call and talks to it over stdin/stdout. pyst2's `AGI` class reads the
environment and holds the streams; commands are formatted and replies parsed by gatekeeper's own
protocol module (the same as FastAGI's), the decision is the gate's, and its record goes to this instance's
decision-log outbox (or its spool: `[log] spool_dir` must be writable by the Asterisk user) before the
verdict is set, as for every other adapter. pyst2 writes every environment
line (the dialled number among them) to stderr, which Asterisk copies into its log, so its stderr goes
nowhere here.

Exit status 0 after the variables were set; anything else leaves GATEKEEPER_RESULT unset, and the
dialplan does not dial.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from asterisk.agi import AGI

from gatekeeper.compose import command_gate
from gatekeeper.config import ConfigError, Settings, load
from gatekeeper.contract import GATEKEEPER_CAMPAIGN, Source
from gatekeeper.fastagi import protocol
from gatekeeper.fastagi.call import TRUE_VALUES
from gatekeeper.fastagi.protocol import AgiEnvironment, Hangup, ReplyParser, Success
from gatekeeper.gate import CallRequest, Clock, wall_clock
from gatekeeper.index.store import ConsentIndex

log = logging.getLogger("gatekeeper.agi")
EXIT_OK, EXIT_FAILED = 0, 1


class _Discard(io.StringIO):
    def write(self, text: str) -> int:
        return len(text)


def environment(env: Mapping[str, str]) -> AgiEnvironment:
    """pyst2's environment dict as gatekeeper's typed environment."""
    block = "".join(f"{key}: {value}\n" for key, value in env.items()) + "\n"
    return protocol.parse_environment(block.encode())


def parse_args(argv: Sequence[str]) -> dict[str, str]:
    """`campaign=ID`, `number=N`, `callback=yes` from the AGI() arguments (a bare first one is the campaign)."""
    params: dict[str, str] = {}
    for i, arg in enumerate(argv):
        name, sep, value = arg.partition("=")
        if sep:
            params[name.strip().lower()] = value.strip()
        elif i == 0 and arg.strip():
            params["campaign"] = arg.strip()
    return params


def request_from(env: AgiEnvironment, params: Mapping[str, str], campaign_variable: str) -> CallRequest:
    return CallRequest(
        dialled=params.get("number") or env.extension,
        campaign=params.get("campaign") or campaign_variable or env.accountcode,
        caller_id=env.callerid,
        presentation=env.callingpres,
        callback_requested=params.get("callback", "").lower() in TRUE_VALUES,
        uniqueid=env.uniqueid,
        source=Source.AGI,
    )


class Channel:
    """Commands over pyst2's streams, one at a time, with replies parsed by the protocol module."""

    def __init__(self, stdin: TextIO, stdout: TextIO) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.parser = ReplyParser()

    def command(self, line: bytes) -> protocol.Reply:
        self.stdout.write(line.decode())
        self.stdout.flush()
        while True:
            raw = self.stdin.readline()
            if not raw:
                raise EOFError("Asterisk closed the AGI streams")
            reply = self.parser.feed_line(raw.encode() if isinstance(raw, str) else raw)
            if reply is not None and not isinstance(reply, Hangup):
                return reply


async def decide(settings: Settings, request: CallRequest, clock: Clock = wall_clock) -> list[tuple[str, str]]:
    """The verdict variables, once the decision's record is in this instance's outbox (or its spool)."""
    index = ConsentIndex.from_settings(settings.index)
    try:
        record = await command_gate(settings, index, clock=clock).check(request)
    finally:
        await index.close()
    return record.channel_variables()


def run(
    argv: Sequence[str], stdin: TextIO, stdout: TextIO, environ: Mapping[str, str], *, clock: Clock = wall_clock
) -> int:
    agi = AGI(stdin=stdin, stdout=stdout, stderr=_Discard())
    env = environment(agi.env)
    params = parse_args(argv)
    channel = Channel(stdin, stdout)
    try:
        settings = load(environ.get("GATEKEEPER_CONFIG") or None, env=environ)
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    variable = ""
    if "campaign" not in params:
        reply = channel.command(protocol.get_variable(GATEKEEPER_CAMPAIGN))
        if isinstance(reply, Success) and reply.data:
            variable = reply.data
    variables = asyncio.run(decide(settings, request_from(env, params, variable), clock))
    reply = channel.command(protocol.exec_mset(variables))
    return EXIT_OK if isinstance(reply, Success | protocol.DeadChannel) else EXIT_FAILED


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="gatekeeper-agi: %(levelname)s: %(message)s")
    try:
        return run(sys.argv[1:], sys.stdin, sys.stdout, os.environ)
    except Exception as exc:  # the dialplan blocks the call; say why without any number
        log.error("failed: %s", type(exc).__name__)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
