"""Reading and validating import files (CSV and JSON Lines) into index entries.

Header: `tenant,number,kind,start,end,reference`. `kind` is consent, customer, objection or suppression
(suppressions are global: tenant `*` or empty). `start`/`end` are ISO dates (whole days in the
campaign's time zone) or date-times (exact instants; without an offset they are read in the region's
time zone). Every invalid row becomes a `RowError` with its line number; nothing here raises for bad data
except a file that cannot be read at all (`ImportFileError`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

from gatekeeper.config import NAME
from gatekeeper.core import jurisdictions
from gatekeeper.core.model import NumberKind
from gatekeeper.core.numbers import NumberPlan, country_time_zones, normalise
from gatekeeper.index import codec
from gatekeeper.index.codec import Kind

COLUMNS = ("tenant", "number", "kind", "start", "end", "reference")
REQUIRED = ("tenant", "number", "kind")
GLOBAL_TENANTS = frozenset({"", "*"})
_KINDS = {k.name.lower(): k for k in Kind}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NO_EMERGENCY = NumberPlan(emergency=frozenset())
MAX_FIELD = 4096


class ImportFileError(Exception):
    """The file as a whole cannot be imported (unreadable, no header, unknown format)."""


class Row(NamedTuple):
    line: int
    tenant: str | None  # None: a global suppression
    e164: str
    kind: Kind
    entry: bytes


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


def detect_format(path: Path, first_line: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".txt", ".tsv"):
        return "csv"
    return "jsonl" if first_line.lstrip().startswith("{") else "csv"


DELIMITERS = (",", ";", "\t")
_QUOTED = re.compile(r'"(?:[^"]|"")*"')


def detect_delimiter(header: str) -> str:
    """A CSV file's delimiter, from its header line: the most frequent of comma, semicolon and tab outside
    quotes (a comma on a tie, and for a header of one column)."""
    bare = _QUOTED.sub("", header)
    return max(DELIMITERS, key=bare.count)


def _open(path: Path) -> io.TextIOWrapper:
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot open: {exc.strerror}") from None
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")


def count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines


def read(path: Path) -> Iterator[tuple[int, Mapping[str, str]] | RowError]:
    """Raw rows with their line numbers, or a RowError for a row that cannot even be split."""
    text = _open(path)
    try:
        first = text.readline()
        fmt = detect_format(path, first)
        text.seek(0)
        if fmt == "jsonl":
            yield from _read_jsonl(text)
        else:
            yield from _read_csv(text, first)
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    finally:
        text.close()


def _read_csv(text: io.TextIOWrapper, first: str) -> Iterator[tuple[int, Mapping[str, str]] | RowError]:
    delimiter = detect_delimiter(first)
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ImportFileError("the file is empty (expected a header: " + ",".join(COLUMNS) + ")") from None
    except csv.Error as exc:
        raise ImportFileError(f"line 1: {exc}") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ImportFileError(
            f"line 1: the header lacks {', '.join(missing)} (expected {','.join(COLUMNS)}; got {','.join(header)})"
        )
    positions = [(name, i) for i, name in enumerate(header) if name in COLUMNS]
    width = len(header)
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield RowError(reader.line_num, "row", f"malformed CSV: {exc}")
            continue
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        if len(values) != width:
            yield RowError(reader.line_num, "row", f"{len(values)} fields, the header has {width}")
            continue
        yield reader.line_num, {name: values[i] for name, i in positions}


def _read_jsonl(text: io.TextIOWrapper) -> Iterator[tuple[int, Mapping[str, str]] | RowError]:
    for line_no, line in enumerate(text, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield RowError(line_no, "json", f"not valid JSON: {exc.msg}")
            continue
        if not isinstance(obj, dict):
            yield RowError(line_no, "json", "each line must be a JSON object")
            continue
        row: dict[str, str] = {}
        bad = None
        for name in COLUMNS:
            value = obj.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, str | int):
                bad = name
                break
            row[name] = str(value)
        if bad is not None:
            yield RowError(line_no, bad, "must be a string")
            continue
        yield line_no, row


def tenant_counts(path: Path) -> Counter[str]:
    """Rows per tenant (suppressions excluded), read cheaply: only the tenant and kind columns."""
    counts: Counter[str] = Counter()
    text = _open(path)
    try:
        first = text.readline()
        text.seek(0)
        if detect_format(path, first) == "jsonl":
            for item in _read_jsonl(text):
                if not isinstance(item, RowError) and item[1].get("kind", "").strip().lower() != "suppression":
                    counts[item[1].get("tenant", "").strip()] += 1
        else:
            delimiter = detect_delimiter(first)
            reader = csv.reader(text, delimiter=delimiter)
            header = [h.strip().lower() for h in next(reader, [])]
            if "tenant" not in header or "kind" not in header:
                return counts
            ti, ki = header.index("tenant"), header.index("kind")
            width = len(header)
            try:
                for values in reader:
                    if len(values) == width and values[ki].strip().lower() != "suppression":
                        counts[values[ti].strip()] += 1
            except csv.Error:
                pass  # the validating pass reports the row
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    finally:
        text.close()
    counts.pop("", None)
    return counts


def region_zone(region: str) -> ZoneInfo | None:
    """The time zone that naive date-times in a region's import are read in (None if ambiguous)."""
    if region in jurisdictions.BUILTIN:
        return ZoneInfo(jurisdictions.builtin(region).timezone)
    zones = country_time_zones(region)
    return ZoneInfo(zones[0]) if len(zones) == 1 else None


def deployment_zone(region: str) -> ZoneInfo:
    """Where a deployment (`[numbers] default_region`) reads whole-day filters and shows times that belong
    to no campaign: the region's zone, else UTC."""
    return region_zone(region) or ZoneInfo("UTC")


class Validator:
    """Turns raw rows into `Row`s for one region (the default for national numbers)."""

    def __init__(self, region: str, now: dt.datetime) -> None:
        self.region = region
        self.zone = region_zone(region)
        self.now = now

    def _moment(self, line: int, name: str, text: str) -> dt.date | dt.datetime | RowError:
        text = text.strip()
        value: dt.date | dt.datetime
        try:
            value = dt.date.fromisoformat(text) if len(text) == 10 else dt.datetime.fromisoformat(text)
        except ValueError:
            return RowError(line, name, f"{text[:40]!r} is not an ISO date (YYYY-MM-DD) or date-time")
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            if self.zone is None:
                return RowError(line, name, f"the date-time needs an offset (region {self.region} has several zones)")
            value = value.replace(tzinfo=self.zone)
        try:
            codec.encode_moment(value)  # in range before any arithmetic on it (9999-12-31 + 1 day overflows)
        except codec.EncodingError as exc:
            return RowError(line, name, str(exc))
        return value

    def validate(self, line: int, raw: Mapping[str, str]) -> Row | RowError:
        kind_text = raw.get("kind", "").strip().lower()
        kind = _KINDS.get(kind_text)
        if kind is None:
            return RowError(line, "kind", f"{kind_text[:40]!r} is not one of consent, customer, objection, suppression")
        tenant_text = raw.get("tenant", "").strip()
        tenant: str | None
        if kind is Kind.SUPPRESSION:
            if tenant_text not in GLOBAL_TENANTS:
                return RowError(line, "tenant", "suppressions are global: leave the tenant empty or write *")
            tenant = None
        elif not NAME.fullmatch(tenant_text):
            what = "missing" if not tenant_text else f"{tenant_text[:40]!r} is not a tenant name"
            return RowError(line, "tenant", f"{what} (1–64 letters, digits, '_', '.' or '-')")
        else:
            tenant = tenant_text
        number_text = raw.get("number", "")
        if len(number_text) > MAX_FIELD:
            return RowError(line, "number", "too long")
        number = normalise(number_text, self.region, _NO_EMERGENCY)
        if number.kind is not NumberKind.VALID or number.e164 is None:
            return RowError(line, "number", f"not a valid telephone number ({number.problem})")
        start_text, end_text = raw.get("start", "").strip(), raw.get("end", "").strip()
        start: dt.date | dt.datetime | None = None
        if start_text:
            parsed = self._moment(line, "start", start_text)
            if isinstance(parsed, RowError):
                return parsed
            start = parsed
        elif kind is Kind.SUPPRESSION:
            start = self.now
        else:
            return RowError(line, "start", f"missing: a {kind.name.lower()} needs a start date")
        end: dt.date | dt.datetime | None = None
        if end_text:
            if kind in (Kind.OBJECTION, Kind.SUPPRESSION):
                return RowError(line, "end", f"a {kind.name.lower()} has no end date (leave it empty)")
            parsed = self._moment(line, "end", end_text)
            if isinstance(parsed, RowError):
                return parsed
            end = parsed
            if _latest(end) < _earliest(start):
                return RowError(line, "end", f"{end_text} is before the start {start_text}")
        reference = raw.get("reference", "").strip()
        if _CONTROL.search(reference):
            return RowError(line, "reference", "contains control characters")
        try:
            entry = codec.entry(kind, start, end, reference)
        except codec.EncodingError as exc:
            return RowError(line, "reference" if "reference" in str(exc) else "start", str(exc))
        return Row(line, tenant, number.e164, kind, entry)


def _earliest(moment: dt.date | dt.datetime) -> dt.datetime:
    if isinstance(moment, dt.datetime):
        return moment
    return dt.datetime.combine(moment, dt.time.min, tzinfo=dt.UTC) - dt.timedelta(days=1)


def _latest(moment: dt.date | dt.datetime) -> dt.datetime:
    if isinstance(moment, dt.datetime):
        return moment
    return dt.datetime.combine(moment, dt.time.max, tzinfo=dt.UTC) + dt.timedelta(days=1)
