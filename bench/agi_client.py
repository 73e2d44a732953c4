"""A lean simulated Asterisk for load generation: the same bytes as `gatekeeper.simulator.fastagi` for the
commands gatekeeper sends (GET FULL VARIABLE, EXEC MSet), without its bookkeeping, so that the client
costs little next to the server it measures."""

from __future__ import annotations

import asyncio

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


async def call(port: int, number: str) -> str:
    """One AGI() call: the environment block, replies to the server's commands, then the server's close.

    Returns the value of the last EXEC MSet (the verdict variables), or "" when none was sent.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    verdict = ""
    try:
        writer.write(environment(number))
        while line := await reader.readline():
            if line.startswith(b"EXEC MSet"):
                verdict = line[10:].strip().strip(b'"').decode()
                writer.write(b"200 result=0\n")
            elif line.startswith(b"GET FULL VARIABLE"):
                writer.write(b"200 result=1 (|1795860072.68)\n")
            else:
                writer.write(b"510 Invalid or unknown command\n")
    finally:
        if not writer.is_closing():
            writer.write(b"HANGUP\n")  # Asterisk's last line of every session
        writer.close()
    return verdict
