"""Reading what a client sends: bounded bodies, JSON objects with known fields, dates, numbers, filters.

Every problem is an `ApiError` with a stable code and, for a field, its name and what is wrong with it.
Numbers and dates follow the import's rules (`gatekeeper.index.rows.Validator`), so a record the API
accepts is one the bulk import would accept too.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from gatekeeper.config import NAME, Settings
from gatekeeper.core.model import Reason, Verdict
from gatekeeper.index.rows import RowError, Validator, deployment_zone
from gatekeeper.log.query import DecisionFilter

MAX_BODY = 64 * 1024  # bytes of a request body (API JSON and UI forms)
MAX_TEXT = 200  # characters of a free-text field (reference)
MAX_NAME = 64
MAX_NUMBER = 64
MAX_PAGE = 500
DEFAULT_PAGE = 50
EARLIEST_YEAR, LATEST_YEAR = 2000, 2100  # what a decision time or a filter bound may be
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # never valid in a name, number or reference (and NUL breaks SQL)
MAX_DIGITS = 20  # of an integer in a JSON body: more than any field takes (int64 has 19)
DIGITS = re.compile(r"[0-9]+")  # a whole number in a query string: ASCII digits only (not "²" or "٣")


class ApiError(Exception):
    """A request the API refuses: HTTP status, stable code, message and (for bad input) the field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, str]:
        body = {"error": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


def invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "invalid-field", f"{field}: {message}", field)


async def read_body(request: web.Request, limit: int = MAX_BODY) -> bytes:
    """The whole body, refusing more than `limit` bytes before reading them when the length is declared."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body-too-large", f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(16384):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body-too-large", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_integer(text: str) -> int:
    """An integer of the body; a longer one than any field takes is refused before `int()` reads it
    (Python refuses more than 4,300 digits with a ValueError, and slowly)."""
    digits = len(text) - text.startswith("-")
    if digits > MAX_DIGITS:
        raise ApiError(400, "invalid-json", f"the body holds an integer of {digits:,} digits (at most {MAX_DIGITS})")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ApiError(400, "invalid-json", f"the body holds a number out of range ({text[:40]})")
    return value


def _json_constant(name: str) -> Any:
    raise ApiError(400, "invalid-json", f"the body is not valid JSON: {name} is not a JSON value")


async def json_object(request: web.Request) -> Fields:
    body = await read_body(request)
    try:
        data = json.loads(body, parse_int=_json_integer, parse_float=_json_float, parse_constant=_json_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid-json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid-json", "the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid-json", "the body must be a JSON object")
    return Fields(data)


class Fields:
    """A JSON object being read: typed getters that name the field, and a check for unknown fields."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)
        self._seen: set[str] = set()

    def raw(self, name: str) -> Any:
        self._seen.add(name)
        return self._data.get(name)

    def text(self, name: str, *, required: bool = False, limit: int = MAX_TEXT) -> str | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise invalid(name, "missing")
            return None
        if not isinstance(value, str):
            raise invalid(name, f"must be a string, not {_json_type(value)}")
        if len(value) > limit:
            raise invalid(name, f"longer than {limit} characters")
        if CONTROL.search(value):
            raise invalid(name, "contains control characters")
        if required and not value.strip():
            raise invalid(name, "must not be empty")
        return value

    def required(self, name: str, *, limit: int = MAX_TEXT) -> str:
        value = self.text(name, required=True, limit=limit)
        assert value is not None
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise invalid(name, f"must be true or false, not {_json_type(value)}")
        return value

    def integer(self, name: str, low: int, high: int) -> int | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise invalid(name, f"must be an integer, not {_json_type(value)}")
        if not low <= value <= high:
            raise invalid(name, f"must be between {low} and {high}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise invalid(unknown[0], f"unknown field (known: {', '.join(sorted(self._seen))})")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string" if isinstance(value, str) else "null"


def name_field(name: str, value: str) -> str:
    if not NAME.fullmatch(value):
        raise invalid(name, f"{value[:40]!r} is not a name (1–64 letters, digits, '_', '.' or '-')")
    return value


def whole_number(name: str, text: str, low: int, high: int) -> int:
    """A whole number from a query string or form, within [low, high]."""
    if not DIGITS.fullmatch(text) or len(text) > len(str(high)) or not low <= int(text) <= high:
        raise invalid(name, f"must be a whole number from {low} to {high}")
    return int(text)


def date_time(name: str, text: str) -> dt.datetime:
    """An RFC 3339 date-time with an offset (a decision time)."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise invalid(name, f"{text[:40]!r} is not a date-time like 2026-07-01T10:30:00+02:00") from None
    if value.tzinfo is None:
        raise invalid(name, "the date-time needs an offset (Z or +02:00)")
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise invalid(name, f"must lie between {EARLIEST_YEAR} and {LATEST_YEAR}")
    return value


@dataclass(frozen=True, slots=True)
class Numbers:
    """The import's number and date rules for one deployment (`[numbers] default_region`)."""

    settings: Settings

    @property
    def region(self) -> str:
        return self.settings.default_region

    @property
    def zone(self) -> ZoneInfo:
        """Where naive times and whole-day filters are read (the default region's zone, else UTC)."""
        return deployment_zone(self.region)

    def validator(self) -> Validator:
        return Validator(self.region, dt.datetime.now(dt.UTC))

    def e164(self, name: str, text: str) -> str:
        """A valid telephone number in E.164 (emergency and short numbers are not numbers here)."""
        if len(text) > MAX_NUMBER:
            raise invalid(name, f"longer than {MAX_NUMBER} characters")
        row = self.validator().validate(0, {"tenant": "", "number": text, "kind": "suppression"})
        if isinstance(row, RowError):
            raise invalid(name, row.message)
        return row.e164


def row_error(error: RowError, names: Mapping[str, str] | None = None) -> ApiError:
    field = (names or {}).get(error.field, error.field)
    return invalid(field, error.message)


@dataclass(frozen=True, slots=True)
class Query:
    """Decision-list parameters: the filter, the page size and the cursor."""

    where: DecisionFilter
    limit: int
    cursor: str | None


def _bound(name: str, text: str, zone: ZoneInfo, *, end: bool) -> dt.datetime:
    """A filter bound: a date (the whole day in `zone`; `to` includes it) or a date-time."""
    text = text.strip()
    if len(text) == 10:
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            raise invalid(name, f"{text[:40]!r} is not a date (YYYY-MM-DD) or a date-time") from None
        if not EARLIEST_YEAR <= day.year <= LATEST_YEAR:
            raise invalid(name, f"must lie between {EARLIEST_YEAR} and {LATEST_YEAR}")
        return dt.datetime.combine(day + dt.timedelta(days=1) if end else day, dt.time(), zone)
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise invalid(name, f"{text[:40]!r} is not a date (YYYY-MM-DD) or a date-time") from None
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise invalid(name, f"must lie between {EARLIEST_YEAR} and {LATEST_YEAR}")
    return value if value.tzinfo is not None else value.replace(tzinfo=zone)


def decision_query(
    params: Mapping[str, str], numbers: Numbers, hash_number: Any, *, number_hash: str | None = None
) -> Query:
    """Parse `from`, `to`, `campaign`, `tenant`, `verdict`, `reason`, `number`, `limit`, `cursor`.

    `hash_number(e164)` turns a typed number into the log's keyed hash; the number itself goes no further.
    """

    def text(name: str, limit: int = MAX_NAME) -> str | None:
        value = params.get(name)
        if value is None or value == "":
            return None
        if len(value) > limit:
            raise invalid(name, f"longer than {limit} characters")
        if CONTROL.search(value):
            raise invalid(name, "contains control characters")
        return value

    zone = numbers.zone
    start = _bound("from", v, zone, end=False) if (v := text("from", 40)) else None
    end = _bound("to", v, zone, end=True) if (v := text("to", 40)) else None
    if start is not None and end is not None and end <= start:
        raise invalid("to", "lies before from")
    verdict = reason = None
    if (v := text("verdict")) is not None:
        try:
            verdict = Verdict(v)
        except ValueError:
            raise invalid("verdict", f"must be one of {', '.join(x.value for x in Verdict)}") from None
    if (v := text("reason")) is not None:
        try:
            reason = Reason(v)
        except ValueError:
            raise invalid("reason", f"{v[:40]!r} is not a reason code") from None
    if (v := text("number", MAX_NUMBER)) is not None:
        number_hash = hash_number(numbers.e164("number", v))
    limit = DEFAULT_PAGE
    if (v := text("limit", 10)) is not None:
        limit = whole_number("limit", v, 1, MAX_PAGE)
    where = DecisionFilter(
        start=start,
        end=end,
        campaign=text("campaign"),
        tenant=text("tenant"),
        verdict=verdict,
        reason=reason,
        number_hash=number_hash,
    )
    return Query(where, limit, text("cursor", 200))
