"""What an AGI request says about a call.

Shared by the FastAGI server and the classic AGI script; imports nothing heavy (the script starts a
process per call).
"""

from __future__ import annotations

from dataclasses import dataclass

from gatekeeper.contract import Source
from gatekeeper.fastagi.protocol import AgiEnvironment, ProtocolError
from gatekeeper.gate import CallRequest

SCRIPT = "check"
TRUE_VALUES = frozenset({"1", "yes", "true", "on"})


@dataclass(frozen=True, slots=True)
class CallInfo:
    request: CallRequest
    needs_context: bool  # the campaign comes from the channel, so read it (with the linkedid)


def call_from_environment(env: AgiEnvironment) -> CallInfo:
    """What the request says about the call: campaign, number, caller ID, ids."""
    script = env.script()
    if script.name and script.name != SCRIPT:
        raise ProtocolError(f"unknown FastAGI script {script.name!r} (use agi://host:port/{SCRIPT})")
    params = script.params
    campaign = params.get("campaign", "")
    request = CallRequest(
        dialled=params.get("number") or env.extension,
        campaign=campaign or env.accountcode,
        caller_id=env.callerid,
        presentation=env.callingpres,
        callback_requested=params.get("callback", "").lower() in TRUE_VALUES,
        uniqueid=env.uniqueid,
        source=Source.FASTAGI,
    )
    return CallInfo(request, needs_context=not campaign)
