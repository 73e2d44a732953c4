"""The load generator of the FastAGI benchmarks: a lean simulated Asterisk on asyncio protocols (uvloop).

It sends the environment block exactly as the test simulator (and Asterisk) does, answers the commands
gatekeeper sends (GET FULL VARIABLE, EXEC MSet) with the simulator's bytes, and times each session from
the connect to the server's close. Protocol callbacks instead of streams keep its own cost per session
small next to the servers it measures, so the same generator can drive a bare responder at more than
10,000 sessions per second on two cores.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gatekeeper.simulator.fastagi import SimChannel, environment_block

_MARK = "0600000000"
# The environment block exactly as the test simulator (and Asterisk) sends it, with the number swapped in.
_TEMPLATE = environment_block(
    SimChannel(
        url="agi://127.0.0.1:4573/check?campaign=acme-sales",
        channel=f"Local/{_MARK}@outbound-00000022;2",
        extension=_MARK,
        callerid_num="+31201234567",
        callerid_name="Acme Sales",
        callingpres=0,
    )
)


def environment(number: str) -> bytes:
    return _TEMPLATE.replace(_MARK.encode(), number.encode())


MSET = b"EXEC MSet"
GET_FULL = b"GET FULL VARIABLE"
MSET_REPLY = b"200 result=0\n"
CONTEXT_REPLY = b"200 result=1 (|1795860072.68)\n"
INVALID = b"510 Invalid or unknown command\n"


class _Call(asyncio.Protocol):
    """One AGI() call: the environment block, replies to the server's commands, done when the server closes."""

    __slots__ = ("buffer", "done", "env", "transport", "verdict")

    def __init__(self, env: bytes, done: asyncio.Future[str]) -> None:
        self.env = env
        self.done = done
        self.buffer = b""
        self.verdict = ""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.env)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\n")) >= 0:
            line, self.buffer = self.buffer[:end], self.buffer[end + 1 :]
            assert self.transport is not None
            if line.startswith(MSET):
                self.verdict = line[10:].strip().strip(b'"').decode()
                self.transport.write(MSET_REPLY)
            elif line.startswith(GET_FULL):
                self.transport.write(CONTEXT_REPLY)
            else:
                self.transport.write(INVALID)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.verdict)


async def call(port: int, number: str) -> str:
    """One session against 127.0.0.1:port; returns the verdict variables of the last EXEC MSet ("" if none)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    await loop.create_connection(lambda: _Call(environment(number), done), "127.0.0.1", port)
    return await done


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


async def back_to_back(port: int, concurrency: int, seconds: float, number: Callable[[int], str]) -> Samples:
    """`concurrency` callers, each starting its next call as soon as the last one ended, for `seconds`."""
    samples = Samples()
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def caller() -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            verdict = await call(port, number(next(counter)))
            samples.latencies.append(time.perf_counter() - t0)
            if "GATEKEEPER_RESULT=" not in verdict:
                samples.failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    samples.elapsed = time.perf_counter() - started
    return samples


async def sporadic(port: int, calls: int, interval: float, number: Callable[[int], str]) -> Samples:
    """One call every `interval` seconds (a dialler at a low rate: caches go cold between calls)."""
    samples = Samples()
    loop = asyncio.get_running_loop()
    started = next_at = loop.time()
    for i in range(calls):
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        t0 = time.perf_counter()
        verdict = await call(port, number(i))
        samples.latencies.append(time.perf_counter() - t0)
        if "GATEKEEPER_RESULT=" not in verdict:
            samples.failures += 1
    samples.elapsed = loop.time() - started
    return samples
