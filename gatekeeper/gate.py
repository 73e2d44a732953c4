"""The gate: the one place that combines I/O with the pure core.

normalise -> screen (rules that need no facts) -> one index lookup under a time budget -> decide -> the
decision record -> the recorder keeps it durably -> the listeners (metrics, structured log) -> the verdict.

`Gate.check` returns only once the record is kept (a Redis XADD acknowledged, or a line fsynced to the
local spool), so no adapter can answer the PBX before the evidence exists; when the record cannot be kept
anywhere it raises `EvidenceError` and the adapter leaves the call without a verdict (the dialplan then
blocks it). Every gate is built by the composition root (`gatekeeper.compose`) with its recorder, its
listeners and its clock as constructor arguments; nothing is attached afterwards.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gatekeeper.config import Settings
from gatekeeper.contract import IndexFailure, Source
from gatekeeper.core.model import Call, Decision, NumberKind
from gatekeeper.core.numbers import normalise
from gatekeeper.core.policy import Pending, screen
from gatekeeper.index.store import ConsentIndex, Lookup, failure_of
from gatekeeper.record import DecisionRecord, EvidenceError, new_decision_id, representable

log = logging.getLogger(__name__)
__all__ = ["NOT_RECORDED", "CallRequest", "Clock", "EvidenceError", "Gate", "Listener", "Recorder", "wall_clock"]

Clock = Callable[[], dt.datetime]


def wall_clock() -> dt.datetime:
    """The real time (UTC): production's clock. Tests pass a pinned one."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class CallRequest:
    """What an adapter knows about a call. `at` None means the gate's clock.

    Made representable on construction: whatever bytes a PBX or client sent (a raw 0xFF decoded with
    surrogateescape, a NUL, an unpaired surrogate from JSON), every text field is valid Unicode without
    NUL afterwards, so the decision record can always be written.
    """

    dialled: str
    campaign: str
    caller_id: str | None = None
    presentation: int | None = None
    at: dt.datetime | None = None
    callback_requested: bool = False
    uniqueid: str = ""
    linkedid: str = ""
    source: str = Source.CLI

    def __post_init__(self) -> None:
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                clean = representable(value)
                if clean is not value:
                    object.__setattr__(self, name, clean)


_TEXT_FIELDS = ("dialled", "campaign", "caller_id", "uniqueid", "linkedid", "source")


class Listener(Protocol):
    """Told about every kept decision, synchronously and cheaply (metrics, structured log)."""

    def __call__(self, record: DecisionRecord, /) -> None: ...


class Recorder(Protocol):
    """Keeps the evidence of every decision (the decision log's outbox).

    `keep` returns once the record is durably accepted; it raises `EvidenceError` when no store took it.
    """

    async def keep(self, record: DecisionRecord, /) -> None: ...


class NotRecorded:
    """The recorder of dry runs (`check` without `--record`, the API's `record: false`, demo scenarios)."""

    async def keep(self, record: DecisionRecord, /) -> None:
        return None


NOT_RECORDED = NotRecorded()


class Gate:
    def __init__(
        self,
        settings: Settings,
        index: ConsentIndex,
        recorder: Recorder,
        *,
        listeners: Sequence[Listener] = (),
        clock: Clock = wall_clock,
        budget: float | None = None,
    ) -> None:
        self.settings = settings
        self.index = index
        self.recorder = recorder
        self.listeners = tuple(listeners)
        self.clock = clock
        self.budget = settings.index.timeout if budget is None else budget
        self.instance = settings.log.instance_name

    async def check(self, request: CallRequest, *, budget: float | None = None) -> DecisionRecord:
        """Decide one call and keep its record. `budget` bounds the index lookup; after it, fail closed.

        Raises `EvidenceError` when the record could not be kept (the call must then get no verdict).
        """
        started = time.perf_counter()
        at = request.at or self.clock()
        campaign = self.settings.campaign(request.campaign)
        number = normalise(request.dialled, self.settings.region_for(campaign), self.settings.numbers)
        screened = screen(
            Call(number, at, request.caller_id, request.presentation, request.callback_requested),
            campaign,
            request.campaign,
        )
        lookup: Lookup | None = None
        failure: IndexFailure | None = None
        if isinstance(screened, Pending):
            try:
                lookup = await self.index.lookup(
                    screened.tenant, screened.e164, budget=self.budget if budget is None else budget
                )
            except Exception as exc:
                failure = failure_of(exc)
                if failure is IndexFailure.OTHER:
                    log.error("unexpected error from the consent index; failing closed", exc_info=exc)
            decision = screened.decide(lookup.facts if lookup is not None else None)
        else:
            decision = screened
        if lookup is not None:
            number_hash: str | None = lookup.key.hash_hex
        elif number.kind is NumberKind.VALID and number.e164 is not None:
            number_hash = self.index.keys.number_hash(number.e164)
        else:
            number_hash = None
        record = self._record(request, campaign.tenant if campaign else None, number.masked, number_hash, at,
                              decision, lookup, failure, started)  # fmt: skip
        await self.recorder.keep(record)
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:
                log.exception("decision listener failed")
        return record

    def _record(
        self,
        request: CallRequest,
        tenant: str | None,
        number_masked: str,
        number_hash: str | None,
        at: dt.datetime,
        decision: Decision,
        lookup: Lookup | None,
        failure: IndexFailure | None,
        started: float,
    ) -> DecisionRecord:
        latency = time.perf_counter() - started
        return DecisionRecord(
            decision_id=new_decision_id(time.time()),
            at=at.astimezone(dt.UTC),
            instance=self.instance,
            campaign=request.campaign,
            tenant=tenant,
            number_masked=number_masked,
            number_hash=number_hash,
            verdict=decision.verdict,
            reason=decision.reason,
            would_block=decision.would_block,
            regime=decision.regime,
            explanation=decision.explanation,
            basis_reference=decision.basis_reference,
            rule=decision.rule,
            generation=lookup.generation if lookup is not None else None,
            uniqueid=request.uniqueid,
            linkedid=request.linkedid,
            source=request.source,
            latency_us=round(latency * 1_000_000),
            index_error=failure.value if failure is not None else None,
        )

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
                if failure_of(exc) is IndexFailure.OTHER:
                    raise
                log.warning("the consent index did not answer a scrub batch: %s", type(exc).__name__)
        facts = iter([lookup.facts for lookup in found] if found is not None else [None] * len(todo))
        return [s.decide(next(facts)) if isinstance(s, Pending) else s for s in screened]
