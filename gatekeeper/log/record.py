"""The decision log's view of a record: its place in its instance's hash chain.

The record itself is `gatekeeper.record.DecisionRecord`, made by the gate. The canonical form (sorted
keys, no spaces, UTF-8) of a stored record plus the previous record's hash gives the record's own hash, so
an edited, inserted or deleted record breaks the chain of its instance.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from gatekeeper.record import DecisionRecord, RecordError, canonical_json, format_time, parse_time

GENESIS = "0" * 64  # the "previous hash" of an instance's first record


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record as the SQL log holds it: its place in its instance's chain and how it got there."""

    record: DecisionRecord
    seq: int  # 1, 2, 3 … per instance, in shipping order
    stream_id: str  # the outbox entry it was shipped from
    shipped_at: dt.datetime
    prev_hash: str
    hash: str

    @property
    def decision_id(self) -> str:
        return self.record.decision_id

    def canonical(self) -> bytes:
        return canonical(self.record, self.seq, self.stream_id, self.shipped_at, self.prev_hash)

    def computed_hash(self) -> str:
        return chain_hash(self.record, self.seq, self.stream_id, self.shipped_at, self.prev_hash)

    def to_json(self) -> dict[str, Any]:
        """The public JSON form (API, access report): the record plus its chain fields."""
        data = self.record.public_json()
        data.update(
            seq=self.seq,
            stream_id=self.stream_id,
            shipped_at=format_time(self.shipped_at),
            prev_hash=self.prev_hash,
            hash=self.hash,
        )
        return data


def canonical(record: DecisionRecord, seq: int, stream_id: str, shipped_at: dt.datetime, prev_hash: str) -> bytes:
    """Every stored field except the record's own hash, as sorted, compact UTF-8 JSON."""
    data = record.to_json()
    data.update(seq=seq, stream_id=stream_id, shipped_at=format_time(shipped_at), prev_hash=prev_hash)
    return canonical_json(data)


def chain_hash(record: DecisionRecord, seq: int, stream_id: str, shipped_at: dt.datetime, prev_hash: str) -> str:
    """SHA-256 (hex) over the canonical form, which includes the previous record's hash."""
    return hashlib.sha256(canonical(record, seq, stream_id, shipped_at, prev_hash)).hexdigest()


__all__ = [
    "GENESIS",
    "DecisionRecord",
    "RecordError",
    "StoredRecord",
    "canonical",
    "chain_hash",
    "format_time",
    "parse_time",
]
