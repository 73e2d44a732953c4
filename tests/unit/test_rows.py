from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from gatekeeper.index import codec
from gatekeeper.index.rows import (
    MAP_TABLE,
    ColumnMap,
    ColumnMapError,
    ImportFileError,
    Row,
    RowError,
    Validator,
    detect_delimiter,
    read,
)

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def validate(**raw: str) -> Row | RowError:
    base = {"tenant": "acme", "number": "0612345678", "kind": "consent", "start": "2025-01-01"}
    base.update(raw)
    return Validator("NL", NOW).validate(7, base)


def test_a_valid_consent_row() -> None:
    row = validate(reference="form-1", end="2027-01-01")
    assert isinstance(row, Row)
    assert (row.tenant, row.e164, row.kind) == ("acme", "+31612345678", codec.Kind.CONSENT)
    assert codec.entries(row.entry) == [(codec.Kind.CONSENT, dt.date(2025, 1, 1), dt.date(2027, 1, 1), "form-1")]


def test_naive_date_times_are_read_in_the_regions_zone() -> None:
    row = validate(start="2025-01-01T10:00")
    assert isinstance(row, Row)
    start = codec.entries(row.entry)[0][1]
    assert start == dt.datetime(2025, 1, 1, 9, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"kind": "maybe"}, "kind", "not one of"),
        ({"tenant": ""}, "tenant", "missing"),
        ({"tenant": "a b"}, "tenant", "not a tenant name"),
        ({"number": "12"}, "number", "not a valid telephone number"),
        ({"number": "112"}, "number", "not a valid telephone number"),
        ({"start": ""}, "start", "missing"),
        ({"start": "01-02-2025"}, "start", "not an ISO date"),
        ({"end": "2024-01-01"}, "end", "before the start"),
        ({"kind": "objection", "end": "2026-01-01"}, "end", "has no end date"),
        ({"kind": "suppression", "tenant": "acme"}, "tenant", "suppressions are global"),
        ({"reference": "x" * 201}, "reference", "longer than 200"),
        ({"reference": "a\x00b"}, "reference", "control characters"),
        ({"start": "1960-01-01"}, "start", "out of range"),
    ],
)
def test_invalid_rows_say_which_field_and_why(raw: dict[str, str], field: str, message: str) -> None:
    error = validate(**raw)
    assert isinstance(error, RowError)
    assert (error.line, error.field) == (7, field)
    assert message in error.message


def test_global_suppression_defaults_to_now() -> None:
    row = validate(kind="suppression", tenant="*", start="")
    assert isinstance(row, Row) and row.tenant is None
    assert codec.entries(row.entry)[0][1] == NOW


def test_csv_reading_reports_broken_rows(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("tenant,number,kind,start,end,reference\nacme,0612345678,consent,2025-01-01,,r\nacme,1,2\n\n")
    items = list(read(path))
    assert items[0] == (2, {"tenant": "acme", "number": "0612345678", "kind": "consent", "start": "2025-01-01",
                            "end": "", "reference": "r"})  # fmt: skip
    assert isinstance(items[1], RowError) and items[1].line == 3 and "3 fields" in items[1].message
    assert len(items) == 2


def test_semicolon_csv_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes("\ufefftenant;number;kind;start\nacme;0612345678;customer;2025-01-01\n".encode())
    expected = {"tenant": "acme", "number": "0612345678", "kind": "customer", "start": "2025-01-01"}
    assert next(iter(read(path))) == (2, expected)


def test_jsonl_reading(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [
        '{"tenant":"acme","number":"0612345678","kind":"consent","start":"2025-01-01"}',
        "{oops",
        "[1]",
        '{"tenant":"acme","number":612345678,"kind":"consent","start":null}',
        '{"tenant":true}',
    ]
    path.write_text("\n".join(lines) + "\n")
    items = list(read(path))
    assert items[0][0] == 1  # type: ignore[index]
    assert isinstance(items[1], RowError) and items[1].line == 2
    assert isinstance(items[2], RowError) and "JSON object" in items[2].message
    assert items[3] == (4, {"tenant": "acme", "number": "612345678", "kind": "consent"})
    assert isinstance(items[4], RowError) and items[4].field == "tenant"


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="cannot open"):
        list(read(tmp_path / "missing.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("name,phone\nx,1\n")
    with pytest.raises(ImportFileError, match="header lacks tenant, number, kind"):
        list(read(bad))
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"tenant,number,kind\n\xff\xfe\n")
    with pytest.raises(ImportFileError, match="not UTF-8"):
        list(read(binary))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ImportFileError, match="empty"):
        list(read(empty))


def test_codec_round_trip() -> None:
    when = dt.datetime(2025, 5, 1, 8, 30, tzinfo=dt.UTC)
    value = codec.record(
        [
            codec.entry(codec.Kind.CONSENT, dt.date(2025, 1, 1), None, "ref"),
            codec.entry(codec.Kind.CUSTOMER, dt.date(2020, 1, 1), dt.date(2024, 1, 1)),
            codec.entry(codec.Kind.OBJECTION, when),
        ]
    )
    facts = codec.facts(value)
    assert facts.consents[0].reference == "ref"
    assert facts.relationships[0].end == dt.date(2024, 1, 1)
    assert facts.objections[0].at == when
    assert len(value) < 50


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        ("tenant,number,kind", ","),
        ("tenant;number;kind", ";"),
        ("tenant\tnumber\tkind", "\t"),
        ('"last, first";"phone"', ";"),  # the comma is inside quotes
        ('"a;b"\t"c"', "\t"),
        ("number", ","),
    ],
)
def test_the_delimiter_is_the_most_frequent_one_outside_quotes(header: str, delimiter: str) -> None:
    assert detect_delimiter(header) == delimiter


def test_validator_tells_facts_that_start_after_the_import() -> None:
    validator = Validator("NL", NOW)  # 2026-11-28 13:00 in Amsterdam
    cases = {"2026-11-28": False, "2026-11-29": True, "2030-01-01": True, "2026-11-28T13:00": False,
             "2026-11-28T13:00:01": True, "2026-11-28T12:00:01+00:00": True}  # fmt: skip
    for start, later in cases.items():
        row = validator.validate(2, {"tenant": "acme", "number": "0612345678", "kind": "consent", "start": start})
        assert isinstance(row, Row) and validator.in_future(row) is later, start


CRM_EXPORT = "Klant;Telefoonnummer;Soort;Begin;Kenmerk\nacme;0612345678;consent;2025-01-01;form-1\n"
CRM_MAP = "klant=tenant,telefoonnummer=number,soort=kind,begin=start,kenmerk=reference"


def test_a_column_map_reads_a_crm_export(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_text(CRM_EXPORT)
    expected = {
        "tenant": "acme",
        "number": "0612345678",
        "kind": "consent",
        "start": "2025-01-01",
        "reference": "form-1",
    }
    assert list(read(path, ColumnMap.parse(CRM_MAP))) == [(2, expected)]
    jsonl = tmp_path / "crm.jsonl"
    jsonl.write_text('{"klant": "acme", "Telefoonnummer": "0612345678", "soort": "consent", "begin": "2025-01-01"}\n')
    assert list(read(jsonl, ColumnMap.parse(CRM_MAP))) == [(1, {k: v for k, v in expected.items() if k != "reference"})]
    # A standard header needs no mapping, and a mapping from the configuration may name absent columns.
    standard = tmp_path / "standard.csv"
    standard.write_text("tenant,number,kind,start\nacme,0612345678,consent,2025-01-01\n")
    assert len(list(read(standard, ColumnMap.of([("telefoonnummer", "number")], MAP_TABLE)))) == 1


def test_the_command_line_map_overrides_the_configured_one() -> None:
    configured = ColumnMap.of([("telefoon", "number"), ("klant", "tenant")], MAP_TABLE)
    combined = configured.then(ColumnMap.parse("mobiel=number,relatie=reference"))
    assert [(m.column, m.field, m.origin) for m in combined.mappings] == [
        ("klant", "tenant", MAP_TABLE),
        ("mobiel", "number", "--map"),
        ("relatie", "reference", "--map"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("telefoonnummer=nummer", "--map: telefoonnummer=nummer: 'nummer' is not a field; the fields are tenant, "
                                  "number, kind, start, end, reference"),
        ("telefoonnummer", "--map: 'telefoonnummer' is not COLUMN=FIELD (e.g. telefoonnummer=number)"),
        ("=number", "--map: =number needs a column and a field"),
        ("a=number,a=tenant", "--map: column 'a' is mapped twice"),
        ("a=number,b=number", "--map: columns 'a' and 'b' both map to number"),
        (",", "--map: empty"),
    ],
)  # fmt: skip
def test_bad_column_maps_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ColumnMapError) as caught:
        ColumnMap.parse(text)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("header", "mapping", "message"),
    [
        ("Klant;Telefoon;Soort", "klant=tenant,soort=kind",
         "line 1: the header lacks number (expected tenant,number,kind,start,end,reference; got klant,telefoon,soort); "
         "name the columns that hold them with --map COLUMN=FIELD,… or [import.columns], e.g. --map "
         "telefoonnummer=number"),
        ("Klant;Telefoon;Soort", "klant=tenant,soort=kind,telefoonnummer=number",
         "line 1: --map telefoonnummer=number: the file has no column 'telefoonnummer' (its columns: klant, telefoon, "
         "soort)"),
        ("Klant;Telefoon;Number;Soort", "klant=tenant,soort=kind,telefoon=number",
         "line 1: columns 'telefoon' and 'number' both give the field number; map only one of them (--map "
         "COLUMN=number)"),
    ],
)  # fmt: skip
def test_missing_or_ambiguous_columns_are_named(tmp_path: Path, header: str, mapping: str, message: str) -> None:
    path = tmp_path / "crm.csv"
    path.write_text(header + "\n")
    with pytest.raises(ImportFileError) as caught:
        list(read(path, ColumnMap.parse(mapping)))
    assert str(caught.value) == message


def test_a_configured_map_names_itself_when_its_column_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_text("tenant,telefoon,kind\n")
    with pytest.raises(ImportFileError, match=r"no column matches \[import.columns\] mobiel=number"):
        list(read(path, ColumnMap.of([("mobiel", "number")], MAP_TABLE)))
