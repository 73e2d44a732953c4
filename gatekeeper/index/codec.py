"""The compact record encoding: a version byte, then self-delimiting fact entries.

    record  = 0x01 entry*
    entry   = len:u8 kind:u8 start:u32be end:u32be reference:utf-8   (len counts the bytes after itself)

A bound is a day number since 1970-01-01 when below 100000 (a whole day in the campaign's time zone),
otherwise Unix seconds (an exact instant); 0xFFFFFFFF means none. The Lua scripts merge records by
comparing whole entries, so importing the same fact twice stores it once.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Iterable
from enum import IntEnum

from gatekeeper.core.model import Consent, Facts, Moment, Objection, Relationship, Suppression

VERSION = b"\x01"
SPILLED = b"\x00"
NONE = 0xFFFFFFFF
DAY_LIMIT = 100_000
MAX_REFERENCE_BYTES = 200
_EPOCH = dt.date(1970, 1, 1)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_HEAD = struct.Struct(">BBII")


class Kind(IntEnum):
    CONSENT = 1
    CUSTOMER = 2
    OBJECTION = 3
    SUPPRESSION = 4


class EncodingError(ValueError):
    """A value the record format cannot hold; `field` names it (`start`, `end` or `reference`)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def encode_moment(moment: Moment | None) -> int:
    if moment is None:
        return NONE
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is None:
            raise EncodingError("a date-time needs a time zone")
        seconds = int(moment.timestamp())
        if not DAY_LIMIT <= seconds < NONE:
            raise EncodingError(f"{moment.isoformat()} is out of range")
        return seconds
    days = moment.toordinal() - _EPOCH_ORDINAL
    if not 0 <= days < DAY_LIMIT:
        raise EncodingError(f"{moment.isoformat()} is out of range")
    return days


def decode_moment(value: int) -> Moment | None:
    if value == NONE:
        return None
    if value < DAY_LIMIT:
        return dt.date.fromordinal(_EPOCH_ORDINAL + value)
    return dt.datetime.fromtimestamp(value, dt.UTC)


def entry(kind: Kind, start: Moment | None, end: Moment | None = None, reference: str = "") -> bytes:
    ref = reference.encode()
    if len(ref) > MAX_REFERENCE_BYTES:
        raise EncodingError(f"reference longer than {MAX_REFERENCE_BYTES} bytes", "reference")
    return _HEAD.pack(9 + len(ref), kind, _field_moment(start, "start"), _field_moment(end, "end")) + ref


def _field_moment(moment: Moment | None, field: str) -> int:
    try:
        return encode_moment(moment)
    except EncodingError as exc:
        raise EncodingError(str(exc), field) from None


def record(entries: Iterable[bytes]) -> bytes:
    return VERSION + b"".join(entries)


def entries(value: bytes) -> list[tuple[Kind, Moment | None, Moment | None, str]]:
    """Decode a record (or a bare run of entries when it does not start with the version byte)."""
    pos = 1 if value[:1] == VERSION else 0
    out = []
    size = len(value)
    while pos < size:
        length, kind, start, end = _HEAD.unpack_from(value, pos)
        ref = value[pos + 10 : pos + 1 + length].decode() if length > 9 else ""
        out.append((Kind(kind), decode_moment(start), decode_moment(end), ref))
        pos += 1 + length
    return out


def facts(*values: bytes | None) -> Facts:
    """Facts from the records of one number (tenant data, objections, suppressions)."""
    consents: list[Consent] = []
    relationships: list[Relationship] = []
    objections: list[Objection] = []
    suppressions: list[Suppression] = []
    for value in values:
        if not value:
            continue
        for kind, start, end, ref in entries(value):
            if start is None:
                continue
            if kind is Kind.CONSENT:
                consents.append(Consent(start, end, ref))
            elif kind is Kind.CUSTOMER:
                relationships.append(Relationship(start, end, ref))
            elif kind is Kind.OBJECTION:
                objections.append(Objection(start, ref))
            else:
                suppressions.append(Suppression(start, ref))
    return Facts(tuple(consents), tuple(relationships), tuple(objections), tuple(suppressions))
