"""Reading and validating import files (CSV and JSON Lines) into index entries.

Header: `tenant,number,kind,start,end,reference`. `kind` is consent, customer, objection or suppression
(suppressions are global: tenant `*` or empty). `start`/`end` are ISO dates (whole days in the
campaign's time zone) or date-times (exact instants; without an offset they are read in the region's
time zone). CRM exports that name the columns their own way (`telefoonnummer`, `klant`) are read through
a `ColumnMap`. Every invalid row becomes a `RowError` with its line number; nothing here raises for bad
data except a file that cannot be read at all (`ImportFileError`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

from gatekeeper.config import NAME
from gatekeeper.core import jurisdictions
from gatekeeper.core.model import NumberKind
from gatekeeper.core.numbers import NumberPlan, country_time_zones, normalise
from gatekeeper.index import codec
from gatekeeper.index.codec import Kind

COLUMNS = ("tenant", "number", "kind", "start", "end", "reference")  # the fields of a row
REQUIRED = ("tenant", "number", "kind")
MAP_OPTION = "--map"
MAP_TABLE = "[import.columns]"
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
    start: dt.date | dt.datetime


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


class WarningKind(StrEnum):
    DUPLICATE = "duplicate"  # the same fact as an earlier row of the file (stored once)
    FUTURE = "future"  # a fact that starts after the import: it counts only from then


@dataclass(frozen=True, slots=True)
class RowWarning:
    """A row that was imported but deserves a look."""

    line: int
    kind: WarningKind
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class ColumnMapError(ValueError):
    """A column mapping that cannot be used: not COLUMN=FIELD, an unknown field, two columns for one field."""


class ColumnMapping(NamedTuple):
    column: str  # lower case, as the file's header names it
    field: str  # one of COLUMNS
    origin: str  # where it was given: MAP_OPTION or MAP_TABLE

    def __str__(self) -> str:
        return f"{self.origin} {self.column}={self.field}"


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """Which column of an import file holds which field, for files whose header names them otherwise.

    Column names are compared in lower case; a column that is not mapped keeps its own name, so a file with
    the standard header needs no mapping. A column given on the command line (`--map`) must be in the file;
    one from the configuration (`[import.columns]`, a mapping for every export of a CRM) may be absent.
    """

    mappings: tuple[ColumnMapping, ...] = ()

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]], origin: str) -> ColumnMap:
        """A map from (column, field) pairs; `origin` names where they come from in error messages."""
        mappings: list[ColumnMapping] = []
        for column_text, field_text in pairs:
            column, target = column_text.strip().lower(), field_text.strip().lower()
            if not column or not target:
                raise ColumnMapError(f"{origin}: {column_text}={field_text} needs a column and a field")
            if target not in COLUMNS:
                raise ColumnMapError(
                    f"{origin}: {column}={target}: {target!r} is not a field; the fields are {', '.join(COLUMNS)}"
                )
            for earlier in mappings:
                if earlier.column == column:
                    raise ColumnMapError(f"{origin}: column {column!r} is mapped twice")
                if earlier.field == target:
                    raise ColumnMapError(f"{origin}: columns {earlier.column!r} and {column!r} both map to {target}")
            mappings.append(ColumnMapping(column, target, origin))
        return cls(tuple(mappings))

    @classmethod
    def parse(cls, text: str, origin: str = MAP_OPTION) -> ColumnMap:
        """`telefoonnummer=number,klant=tenant` (the `--map` option)."""
        pairs = []
        for item in text.split(","):
            if not item.strip():
                continue
            column, sep, target = item.partition("=")
            if not sep:
                raise ColumnMapError(f"{origin}: {item.strip()!r} is not COLUMN=FIELD (e.g. telefoonnummer=number)")
            pairs.append((column, target))
        if not pairs:
            raise ColumnMapError(f"{origin}: empty; give COLUMN=FIELD pairs, e.g. telefoonnummer=number,klant=tenant")
        return cls.of(pairs, origin)

    def then(self, later: ColumnMap) -> ColumnMap:
        """This map overridden by `later` (the command line over the configuration): a mapping of `later`
        replaces any of this map for the same column or the same field."""
        columns = {m.column for m in later.mappings}
        fields = {m.field for m in later.mappings}
        kept = tuple(m for m in self.mappings if m.column not in columns and m.field not in fields)
        return ColumnMap(kept + later.mappings)

    def rename(self) -> dict[str, str]:
        """Lower-case column name -> field, for every name that gives a field (mapped or standard)."""
        names = {c: c for c in COLUMNS}
        for m in self.mappings:
            names[m.column] = m.field
        return names

    def fields(self, header: Sequence[str]) -> list[str | None]:
        """The field each column of a CSV header holds (None: not imported), or an ImportFileError that says
        which column is missing or ambiguous and how to map it."""
        names = [h.strip().lower() for h in header]
        absent = [m for m in self.mappings if m.origin == MAP_OPTION and m.column not in names]
        if absent:
            raise ImportFileError(
                f"line 1: {absent[0]}: the file has no column {absent[0].column!r} (its columns: {', '.join(names)})"
            )
        rename = self.rename()
        fields = [rename.get(n) for n in names]
        first: dict[str, str] = {}
        for name, target in zip(names, fields, strict=True):
            if target is None:
                continue
            if target in first:
                raise ImportFileError(
                    f"line 1: columns {first[target]!r} and {name!r} both give the field {target}; "
                    f"map only one of them ({MAP_OPTION} COLUMN={target})"
                )
            first[target] = name
        missing = [c for c in REQUIRED if c not in first]
        if missing:
            unmatched = [str(m) for m in self.mappings if m.field in missing]
            tried = f"; no column matches {', '.join(unmatched)}" if unmatched else ""
            raise ImportFileError(
                f"line 1: the header lacks {', '.join(missing)} (expected {','.join(COLUMNS)}; got {','.join(names)}"
                f"{tried}); name the columns that hold them with {MAP_OPTION} COLUMN=FIELD,… or {MAP_TABLE}, "
                f"e.g. {MAP_OPTION} telefoonnummer=number"
            )
        return fields


NO_MAPPING = ColumnMap()


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


def read(path: Path, columns: ColumnMap = NO_MAPPING) -> Iterator[tuple[int, Mapping[str, str]] | RowError]:
    """Raw rows (field -> text) with their line numbers, or a RowError for a row that cannot even be split."""
    text = _open(path)
    try:
        first = text.readline()
        fmt = detect_format(path, first)
        text.seek(0)
        if fmt == "jsonl":
            yield from _read_jsonl(text, columns)
        else:
            yield from _read_csv(text, first, columns)
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    finally:
        text.close()


def _read_csv(
    text: io.TextIOWrapper, first: str, columns: ColumnMap
) -> Iterator[tuple[int, Mapping[str, str]] | RowError]:
    delimiter = detect_delimiter(first)
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError("the file is empty (expected a header: " + ",".join(COLUMNS) + ")") from None
    except csv.Error as exc:
        raise ImportFileError(f"line 1: {exc}") from None
    positions = [(name, i) for i, name in enumerate(columns.fields(header)) if name is not None]
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


def _read_jsonl(text: io.TextIOWrapper, columns: ColumnMap) -> Iterator[tuple[int, Mapping[str, str]] | RowError]:
    rename = columns.rename()
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
        for key, value in obj.items():
            name = rename.get(key.lower())
            if name is None or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, str | int):
                bad = name
                break
            row[name] = str(value)
        if bad is not None:
            yield RowError(line_no, bad, "must be a string")
            continue
        yield line_no, row


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
        self.today = now.astimezone(self.zone or dt.UTC).date()

    def in_future(self, row: Row) -> bool:
        """Whether the fact starts after the import's time (a date: after today in the region's zone)."""
        if isinstance(row.start, dt.datetime):
            return row.start > self.now
        return row.start > self.today

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
            return RowError(line, exc.field or "start", str(exc))
        return Row(line, tenant, number.e164, kind, entry, start)


def _earliest(moment: dt.date | dt.datetime) -> dt.datetime:
    if isinstance(moment, dt.datetime):
        return moment
    return dt.datetime.combine(moment, dt.time.min, tzinfo=dt.UTC) - dt.timedelta(days=1)


def _latest(moment: dt.date | dt.datetime) -> dt.datetime:
    if isinstance(moment, dt.datetime):
        return moment
    return dt.datetime.combine(moment, dt.time.max, tzinfo=dt.UTC) + dt.timedelta(days=1)
