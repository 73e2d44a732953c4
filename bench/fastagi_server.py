"""The server side of the FastAGI benchmark, in a process of its own (as in production), with uvloop.

`--mode gatekeeper`: `gatekeeper serve` as the composition root builds it, logging as under systemd (JSON
lines on stderr), with a listener that keeps every decision's latency.
`--mode minimal`: a minimal honest gate: reads the environment block, parses the extension with
phonenumbers, looks the E.164 number up with one Redis GET (hiredis, one pipelined connection), answers
one EXEC MSet with ALLOW or BLOCK and closes. No rule book, no evidence, no metrics: what any gate must do.
`--mode floor`: a bare responder that reads the environment block, answers one fixed EXEC MSet and
closes, doing no other work (the floor on this machine).

The two reference servers use asyncio protocols, the cheapest way to serve a connection on asyncio. On
SIGTERM the latencies (gatekeeper only) go to `--out` as JSON, with the process's CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

import phonenumbers

from gatekeeper import logs
from gatekeeper.compose import build_service
from gatekeeper.config import load
from gatekeeper.index.fastpath import Endpoint, FastPath
from gatekeeper.serve import install_uvloop

FIXED = b'EXEC MSet "GATEKEEPER_RESULT=ALLOW,GATEKEEPER_REASON=consent,GATEKEEPER_DECISION_ID=X"\n'
ALLOW = b'EXEC MSet "GATEKEEPER_RESULT=ALLOW,GATEKEEPER_REASON=consent"\n'
BLOCK = b'EXEC MSet "GATEKEEPER_RESULT=BLOCK,GATEKEEPER_REASON=no-basis"\n'
MINIMAL_PREFIX = "minimal:"  # the minimal gate's keys: minimal:+31612345678 -> 1


class Floor(asyncio.Protocol):
    """Waits for the empty line that ends the environment block, answers, closes after the reply."""

    def __init__(self) -> None:
        self.buffer = b""
        self.answered = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        if not self.answered:
            end = self.buffer.find(b"\n\n")
            if end < 0:
                return
            self.answered = True
            self.buffer = self.buffer[end + 2 :]
            self.answer(data)
        elif b"\n" in self.buffer:
            self.transport.close()

    def answer(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(FIXED)


class Minimal(Floor):
    """The floor plus what any honest gate does: parse the number, one Redis GET, answer by its result."""

    fast: FastPath

    def answer(self, data: bytes) -> None:
        start = data.find(b"agi_extension: ") + 15
        extension = data[start : data.find(b"\n", start)].decode()
        asyncio.get_running_loop().create_task(self.decide(extension))

    async def decide(self, extension: str) -> None:
        assert self.transport is not None
        try:
            number = phonenumbers.parse(extension, "NL")
            valid = phonenumbers.is_valid_number(number)
        except phonenumbers.NumberParseException:
            valid = False
        found = None
        if valid:
            e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            found = await self.fast.call("GET", MINIMAL_PREFIX + e164)
        self.transport.write(ALLOW if found else BLOCK)


async def serve_protocol(factory: type[Floor], port: int, stop: asyncio.Event) -> None:
    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", port, backlog=4096)
    await stop.wait()
    server.close()


async def gatekeeper(config: Path, latencies: list[float]) -> None:
    """`gatekeeper serve` as `gatekeeper.serve.serve` runs it (Service.run: until SIGTERM)."""
    logs.configure("json", "info", batched=True)  # as `gatekeeper serve` logs under systemd: a line per block
    service = build_service(load(config), listeners=[lambda record: latencies.append(record.latency_us / 1e6)])
    await service.run()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["gatekeeper", "minimal", "floor"], required=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--redis-url")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    stop = asyncio.Event()
    if args.mode != "gatekeeper":
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    latencies: list[float] = []
    if args.mode == "floor":
        await serve_protocol(Floor, args.port, stop)
    elif args.mode == "minimal":
        endpoint = Endpoint.from_url(args.redis_url)
        assert endpoint is not None
        Minimal.fast = FastPath(endpoint)
        await serve_protocol(Minimal, args.port, stop)
        await Minimal.fast.close()
    else:
        await gatekeeper(args.config, latencies)
    times = os.times()
    args.out.write_text(json.dumps({"latencies": latencies, "cpu_seconds": times.user + times.system}))


if __name__ == "__main__":
    install_uvloop()
    asyncio.run(main())
