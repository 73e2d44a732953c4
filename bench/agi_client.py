"""A lean simulated Asterisk for load generation: the same bytes as `gatekeeper.simulator.fastagi` for the
commands gatekeeper sends (GET FULL VARIABLE, EXEC MSet), without its bookkeeping, so that the client
costs little next to the server it measures."""

from __future__ import annotations

import asyncio

ENV_LINES = (
    "agi_network: yes",
    "agi_network_script: check?campaign=acme-sales",
    "agi_request: agi://127.0.0.1:4573/check?campaign=acme-sales",
    "agi_channel: Local/{number}@outbound-00000022;2",
    "agi_language: en",
    "agi_type: Local",
    "agi_uniqueid: 1795860072.69",
    "agi_version: 23.4.1",
    "agi_callerid: +31201234567",
    "agi_calleridname: Acme Sales",
    "agi_callingpres: 0",
    "agi_callingani2: 0",
    "agi_callington: 0",
    "agi_callingtns: 0",
    "agi_dnid: unknown",
    "agi_rdnis: unknown",
    "agi_context: outbound",
    "agi_extension: {number}",
    "agi_priority: 1",
    "agi_enhanced: 0.0",
    "agi_accountcode: ",
    "agi_threadid: 140677382702784",
)
TEMPLATE = "\n".join(ENV_LINES) + "\n\n"


def environment(number: str) -> bytes:
    return TEMPLATE.format(number=number).encode()


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
