"""The gate: the one place that combines I/O with the pure core.

normalise -> screen (rules that need no facts) -> one index lookup under a time budget -> decide ->
hand the decision to the listeners (log, metrics). Every adapter (FastAGI, ARI, AGI script, CLI, HTTP)
calls `Gate.check`; none contains policy.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gatekeeper.config import Settings
from gatekeeper.core.model import Call, Campaign, Decision, Number, NumberKind
from gatekeeper.core.numbers import normalise
from gatekeeper.core.policy import Pending, screen
from gatekeeper.index.store import ConsentIndex, Lookup, is_unavailable

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


def wall_clock() -> dt.datetime:
    """The real time (UTC): production's clock. Tests pass a pinned one."""
    return dt.datetime.now(dt.UTC)


# RFC 4648 base32 to Crockford's alphabet (no I, L, O, U): ids sort like the times they start with.
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def new_decision_id(now: float | None = None) -> str:
    """A 26-character, time-ordered identifier: 48 bits of milliseconds, then 80 random bits."""
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    return base64.b32encode(ms.to_bytes(6) + os.urandom(10))[:26].translate(_CROCKFORD).decode()


@dataclass(frozen=True, slots=True)
class CallRequest:
    """What an adapter knows about a call. `at` None means now."""

    dialled: str
    campaign: str
    caller_id: str | None = None
    presentation: int | None = None
    at: dt.datetime | None = None
    callback_requested: bool = False
    uniqueid: str = ""
    linkedid: str = ""
    source: str = "cli"


@dataclass(frozen=True, slots=True)
class GateDecision:
    id: str
    decision: Decision
    request: CallRequest = field(repr=False)
    campaign: Campaign | None
    number: Number = field(repr=False)
    number_hash: str | None
    at: dt.datetime
    generation: int | None = None
    latency: float = 0.0  # seconds, request to verdict
    index_error: str | None = None  # why the index could not answer (fail closed), e.g. "timeout"
    looked_up: bool = False

    @property
    def tenant(self) -> str | None:
        return self.campaign.tenant if self.campaign is not None else None

    @property
    def masked_number(self) -> str:
        return self.number.masked

    def to_json(self) -> dict[str, Any]:
        """The public JSON form (CLI `check --json`, HTTP API)."""
        d = self.decision
        return {
            "decision_id": self.id,
            "verdict": d.verdict.value,
            "reason": d.reason.value,
            "would_block": d.would_block,
            "regime": d.regime,
            "explanation": d.explanation,
            "rule": d.rule,
            "basis_reference": d.basis_reference,
            "campaign": self.request.campaign,
            "tenant": self.tenant,
            "number": self.masked_number,
            "number_hash": self.number_hash,
            "at": self.at.isoformat(),
            "generation": self.generation,
            "latency_ms": round(self.latency * 1000, 3),
        }


class Listener(Protocol):
    """Told about every decision, synchronously and cheaply (metrics, structured log)."""

    def __call__(self, decision: GateDecision, /) -> None: ...


class Recorder(Protocol):
    """Keeps the evidence of every decision (the decision log's outbox).

    `append` must not raise: when its store is down it keeps the record elsewhere (a local spool) and
    replays it later. The gate starts it as a task as soon as the verdict is known, so the PBX gets its
    answer without waiting for the write; `Gate.drain` waits for the writes in flight (shutdown).
    """

    async def append(self, decision: GateDecision, /) -> None: ...


class Gate:
    def __init__(
        self,
        settings: Settings,
        index: ConsentIndex,
        *,
        budget: float | None = None,
        clock: Clock = wall_clock,
    ) -> None:
        self.settings = settings
        self.index = index
        self.budget = settings.index.timeout if budget is None else budget
        self.clock = clock
        self.listeners: list[Listener] = []
        self.recorder: Recorder | None = None
        self._writes: set[asyncio.Task[None]] = set()

    def number_for(self, request: CallRequest, campaign: Campaign | None) -> Number:
        return normalise(request.dialled, self.settings.region_for(campaign), self.settings.numbers)

    async def check(self, request: CallRequest, *, budget: float | None = None) -> GateDecision:
        """Decide one call. `budget` bounds the index lookup (default: the gate's); after it, fail closed."""
        started = time.perf_counter()
        at = request.at or self.clock()
        campaign = self.settings.campaign(request.campaign)
        number = self.number_for(request, campaign)
        call = Call(number, at, request.caller_id, request.presentation, request.callback_requested)
        screened = screen(call, campaign, request.campaign)
        lookup: Lookup | None = None
        error: str | None = None
        if isinstance(screened, Pending):
            try:
                async with asyncio.timeout(self.budget if budget is None else budget):
                    lookup = await self.index.lookup(screened.tenant, screened.e164)
            except Exception as exc:
                if not is_unavailable(exc):
                    log.exception("unexpected error from the consent index; failing closed")
                error = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            decision = screened.decide(lookup.facts if lookup is not None else None)
        else:
            decision = screened
        return self._finish(request, campaign, number, at, decision, lookup, error, started)

    def _finish(
        self,
        request: CallRequest,
        campaign: Campaign | None,
        number: Number,
        at: dt.datetime,
        decision: Decision,
        lookup: Lookup | None,
        error: str | None,
        started: float,
    ) -> GateDecision:
        if lookup is not None:
            number_hash: str | None = lookup.key.hash_hex
        elif number.kind is NumberKind.VALID and number.e164 is not None:
            number_hash = self.index.keys.number_hash(number.e164)
        else:
            number_hash = None
        result = GateDecision(
            id=new_decision_id(),
            decision=decision,
            request=request,
            campaign=campaign,
            number=number,
            number_hash=number_hash,
            at=at,
            generation=lookup.generation if lookup is not None else None,
            latency=time.perf_counter() - started,
            index_error=error,
            looked_up=lookup is not None or error is not None,
        )
        self._publish(result)
        return result

    def _publish(self, result: GateDecision) -> None:
        if self.recorder is not None:
            task = asyncio.get_running_loop().create_task(self.recorder.append(result))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)
        for listener in self.listeners:
            try:
                listener(result)
            except Exception:
                log.exception("decision listener failed")

    async def drain(self) -> None:
        """Wait until every decision made so far has been handed to the recorder."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def check_many(self, campaign_id: str, dialled: Sequence[str], at: dt.datetime) -> list[Decision]:
        """Decide a list of numbers for one campaign at one time with batched lookups (pre-campaign scrub).

        A scrub is not a call: nothing is recorded and the listeners are not told. When the index cannot
        answer, the numbers that needed it get `index-unavailable` (fail closed).
        """
        campaign = self.settings.campaign(campaign_id)
        region = self.settings.region_for(campaign)
        plan = self.settings.numbers
        screened = [screen(Call(normalise(text, region, plan), at), campaign, campaign_id) for text in dialled]
        todo = [s for s in screened if isinstance(s, Pending)]
        found: list[Lookup] | None = None
        if todo:
            try:
                async with asyncio.timeout(self.budget):
                    found = await self.index.lookup_many(todo[0].tenant, [p.e164 for p in todo])
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                log.warning("the consent index did not answer a scrub batch: %s", type(exc).__name__)
        facts = iter([lookup.facts for lookup in found] if found is not None else [None] * len(todo))
        return [s.decide(next(facts)) if isinstance(s, Pending) else s for s in screened]
