"""The decision record: the one canonical value the gate makes of every decision.

Everything else is a projection of it: the channel variables the PBX gets (`channel_variables`), the
decision log's entry (`payload`, read back with `loads`; the SQL log adds its chain fields), the JSON of the
API and of `gatekeeper check --json` (`public_json`), the structured log line (`log_fields`) and the
metrics. One name per concept: the masked number is `number_masked`, the time from request to verdict is
`latency_us` (microseconds), everywhere.

A record never holds the dialled number: only its masked form (`+31 6 ****5678`) and its keyed hash. Every
text it carries is representable (`representable`): valid Unicode without NUL, so that neither the Redis
outbox, the spool, JSON nor PostgreSQL can refuse it, whatever bytes the PBX or a client sent.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
from dataclasses import dataclass, fields, replace
from typing import Any, Final

import orjson

from gatekeeper.contract import GATEKEEPER_DECISION_ID, GATEKEEPER_REASON, GATEKEEPER_RESULT, ChannelResult
from gatekeeper.core.model import Reason, Verdict

RECORD_VERSION: Final = 1
_TIME_FORMAT_LENGTH: Final = 27  # 2026-07-01T10:30:00.000000Z


class RecordError(ValueError):
    """A serialised record that cannot be read (wrong version, missing or mistyped field)."""


class EvidenceError(Exception):
    """A decision's record could not be kept anywhere: its verdict must not reach the PBX."""


# -- text that every store accepts ------------------------------------------------------------------

# What JSON, UTF-8 and PostgreSQL's text cannot hold: NUL and lone surrogates (a FastAGI value decoded with
# surrogateescape carries each undecodable byte as U+DC80..U+DCFF; JSON's \ud800 escapes decode to others).
_UNREPRESENTABLE: Final = re.compile("[\x00\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a raw byte kept by surrogateescape: show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def representable(text: str) -> str:
    """`text` with NUL and lone surrogates written as visible escapes (`\\x00`, `\\xff`, `\\udc00`).

    Valid text comes back as it is (the common case costs two C-speed scans). The escapes are
    one-way: the record shows what arrived; a byte-exact copy of a malformed value is not evidence.
    """
    if text.isascii() and "\x00" not in text:
        return text
    return _UNREPRESENTABLE.sub(_escape, text)


# -- times --------------------------------------------------------------------------------------------


def format_time(moment: dt.datetime) -> str:
    """Fixed-width UTC text (`2026-07-01T10:30:00.000000Z`): sorts like the instants it names."""
    if moment.tzinfo is None:
        raise ValueError("decision times must be timezone-aware")
    return moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> dt.datetime:
    """The inverse of `format_time`."""
    if len(text) != _TIME_FORMAT_LENGTH or not text.endswith("Z"):
        raise ValueError(f"{text!r} is not a time like 2026-07-01T10:30:00.000000Z")
    return dt.datetime.fromisoformat(text)


# -- decision ids -------------------------------------------------------------------------------------

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # no I, L, O, U
_PAIRS: Final = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)  # 10 bits -> 2 characters
_SHIFTS: Final = tuple(range(120, -1, -10))
_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))


def new_decision_id(now: float) -> str:
    """26 characters of Crockford base32 that sort like the times they start with: 48 bits of Unix
    milliseconds, then 80 random bits (a ULID's layout; the generator is seeded from the OS per process)."""
    value = (((int(now * 1000) & 0xFFFF_FFFF_FFFF) << 80) | _random.getrandbits(80)) << 2
    return "".join([_PAIRS[(value >> shift) & 0x3FF] for shift in _SHIFTS])


# -- the record ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One decision, as decided: what the PBX was told and the evidence for it."""

    decision_id: str
    at: dt.datetime  # the call time (UTC), which the decision was made for
    instance: str  # the gatekeeper instance that decided (its records form one hash chain)
    campaign: str  # as requested (a campaign that is not configured is kept as it came)
    tenant: str | None  # None: the campaign is not configured
    number_masked: str
    number_hash: str | None  # keyed hash of the E.164 number; None for invalid and emergency numbers
    verdict: Verdict
    reason: Reason
    would_block: bool  # monitor mode let through a call that enforcement would block
    regime: str | None
    explanation: str
    basis_reference: str | None  # the consent's or relationship's reference, for allowed calls
    rule: int  # the POLICY.md rule that decided
    generation: int | None  # the tenant's index generation the lookup used
    uniqueid: str
    linkedid: str
    source: str  # a `contract.Source` value
    latency_us: int  # request to verdict, record not included
    index_error: str | None  # a `contract.IndexFailure` value when the index could not answer

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW

    def channel_variables(self) -> list[tuple[str, str]]:
        """What the PBX is told (FastAGI `EXEC MSet`, ARI variables), in the order they are set."""
        return [
            (GATEKEEPER_RESULT, ChannelResult.of(self.verdict).value),
            (GATEKEEPER_REASON, self.reason.value),
            (GATEKEEPER_DECISION_ID, self.decision_id),
        ]

    def to_json(self) -> dict[str, Any]:
        """The serialised form (outbox, spool, chain hash): every field, with the format version."""
        return {
            "v": RECORD_VERSION,
            "decision_id": self.decision_id,
            "at": format_time(self.at),
            "instance": self.instance,
            "campaign": self.campaign,
            "tenant": self.tenant,
            "number_masked": self.number_masked,
            "number_hash": self.number_hash,
            "verdict": self.verdict.value,
            "reason": self.reason.value,
            "would_block": self.would_block,
            "regime": self.regime,
            "explanation": self.explanation,
            "basis_reference": self.basis_reference,
            "rule": self.rule,
            "generation": self.generation,
            "uniqueid": self.uniqueid,
            "linkedid": self.linkedid,
            "source": self.source,
            "latency_us": self.latency_us,
            "index_error": self.index_error,
        }

    def public_json(self) -> dict[str, Any]:
        """The public form (API, `check --json`, the log's JSON): the fields without the format version."""
        data = self.to_json()
        del data["v"]
        return data

    def payload(self) -> bytes:
        """One line of compact UTF-8 JSON: the outbox entry and the spool line."""
        try:
            data = orjson.dumps(self.to_json())
        except orjson.JSONEncodeError:  # a lone surrogate slipped past the boundary: escape it, keep the record
            return orjson.dumps(self.made_representable().to_json())
        if b"\\u0000" in data:  # a NUL did (PostgreSQL's text cannot hold it)
            return orjson.dumps(self.made_representable().to_json())
        return data

    def dumps(self) -> str:
        return self.payload().decode()

    def made_representable(self) -> DecisionRecord:
        """This record with every text made representable (a last defence; the gate's inputs already are)."""
        changes: dict[str, Any] = {
            f.name: representable(v) for f in fields(self) if isinstance(v := getattr(self, f.name), str)
        }
        return replace(self, **changes)

    def log_fields(self) -> dict[str, Any]:
        """The structured log line's fields: enough to find the record; no explanation, no chain."""
        return {
            "decision_id": self.decision_id,
            "campaign": self.campaign,
            "tenant": self.tenant,
            "number_masked": self.number_masked,
            "verdict": self.verdict.value,
            "reason": self.reason.value,
            "would_block": self.would_block,
            "latency_us": self.latency_us,
            "generation": self.generation,
            "source": self.source,
            "index_error": self.index_error,
        }

    @classmethod
    def from_json(cls, data: Any) -> DecisionRecord:
        if not isinstance(data, dict):
            raise RecordError("a record must be a JSON object")
        if data.get("v") != RECORD_VERSION:
            raise RecordError(f"unsupported record version {data.get('v')!r}")
        try:
            return cls(
                decision_id=_text(data, "decision_id"),
                at=parse_time(_text(data, "at")),
                instance=_text(data, "instance"),
                campaign=_text(data, "campaign"),
                tenant=_optional_text(data, "tenant"),
                number_masked=_text(data, "number_masked"),
                number_hash=_optional_text(data, "number_hash"),
                verdict=Verdict(_text(data, "verdict")),
                reason=Reason(_text(data, "reason")),
                would_block=_bool(data, "would_block"),
                regime=_optional_text(data, "regime"),
                explanation=_text(data, "explanation"),
                basis_reference=_optional_text(data, "basis_reference"),
                rule=_int(data, "rule"),
                generation=_optional_int(data, "generation"),
                uniqueid=_text(data, "uniqueid"),
                linkedid=_text(data, "linkedid"),
                source=_text(data, "source"),
                latency_us=_int(data, "latency_us"),
                index_error=_optional_text(data, "index_error"),
            )
        except ValueError as exc:  # bad time, verdict or reason
            raise RecordError(str(exc)) from None

    @classmethod
    def loads(cls, text: str | bytes) -> DecisionRecord:
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise RecordError(f"not JSON: {exc}") from None
        return cls.from_json(data)


def canonical_json(data: dict[str, Any]) -> bytes:
    """Sorted, compact UTF-8 JSON: the form a record's chain hash is computed over."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise RecordError(f"{key}: expected a string, got {type(value).__name__}")
    return value


def _optional_text(data: dict[str, Any], key: str) -> str | None:
    return None if data.get(key) is None else _text(data, key)


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordError(f"{key}: expected an integer, got {type(value).__name__}")
    return value


def _optional_int(data: dict[str, Any], key: str) -> int | None:
    return None if data.get(key) is None else _int(data, key)


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise RecordError(f"{key}: expected true or false, got {type(value).__name__}")
    return value
