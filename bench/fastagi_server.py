"""The server side of the FastAGI benchmark, in a process of its own (as in production).

`--mode gatekeeper`: `gatekeeper serve` with a listener that keeps every decision's latency (request parsed
to verdict); `--mode floor`: a bare asyncio FastAGI responder that reads the environment block, answers
one fixed EXEC MSet and closes, doing no other work (the floor on this machine). On SIGTERM the latencies
go to `--out` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

from gatekeeper.config import load
from gatekeeper.gate import GateDecision
from gatekeeper.serve import build, install_uvloop

FIXED = b'EXEC MSet "GATEKEEPER_RESULT=ALLOW,GATEKEEPER_REASON=consent,GATEKEEPER_DECISION_ID=X"\n'


async def floor(port: int, stop: asyncio.Event) -> None:
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (await reader.readuntil(b"\n")) != b"\n":
                pass
            writer.write(FIXED)
            await writer.drain()
            await reader.readuntil(b"\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", port, backlog=4096)
    await stop.wait()
    server.close()


async def gatekeeper(config: Path, latencies: list[float], stop: asyncio.Event) -> None:
    service = build(load(config))

    def keep(decision: GateDecision) -> None:
        latencies.append(decision.latency)

    service.gate.listeners.append(keep)
    await service.start()
    await stop.wait()
    await service.stop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["gatekeeper", "floor"], required=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    latencies: list[float] = []
    if args.mode == "floor":
        await floor(args.port, stop)
    else:
        await gatekeeper(args.config, latencies, stop)
    args.out.write_text(json.dumps({"latencies": latencies}))


if __name__ == "__main__":
    install_uvloop()
    asyncio.run(main())
