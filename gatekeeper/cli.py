"""The `gatekeeper` command line.

Exit status: 0 allow / success, 1 block / some rows rejected / a split tenant (status), 2 usage or
configuration error, 3 the consent index is unavailable (commands other than `check`, which then
decides: block).
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import csv
import datetime as dt
import json
import logging
import re
import secrets
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

from gatekeeper import __version__, logs
from gatekeeper.compose import command_gate, dry_gate
from gatekeeper.config import NAME, ConfigError, Settings, load, suggestion
from gatekeeper.core.model import Decision, NumberKind
from gatekeeper.core.numbers import normalise
from gatekeeper.core.policy import zone
from gatekeeper.core.times import UTC, shown
from gatekeeper.demo import DemoError, run_demo
from gatekeeper.gate import CallRequest, EvidenceError, Gate
from gatekeeper.index.health import TenantCondition, tenant_health
from gatekeeper.index.loader import ImportRefused, ImportReport, Loader
from gatekeeper.index.rows import (
    MAP_TABLE,
    ColumnMap,
    ColumnMapError,
    ImportFileError,
    WarningKind,
    count_lines,
    detect_delimiter,
)
from gatekeeper.index.store import ConsentIndex, is_unavailable
from gatekeeper.log.commands import add_log_parser, cmd_log
from gatekeeper.record import DecisionRecord
from gatekeeper.serve import serve
from gatekeeper.web.auth import Role, new_token

if TYPE_CHECKING:
    from _csv import Writer as CsvWriter

EXIT_OK, EXIT_BLOCK, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
SCRUB_BATCH = 1_000
SCRUB_IN_FLIGHT = 3
SCRUB_SAMPLE = 100  # rows read to find the number column when the header names none
NUMBER_COLUMNS = ("number", "phone", "telephone", "msisdn", "telefoon", "telefoonnummer", "phone_number")

log = logging.getLogger("gatekeeper")


class UsageError(Exception):
    """Bad arguments: exit status 2 with the message."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gatekeeper",
        description="Compliance gate for outbound calls: consent, objections, calling hours, caller ID.",
    )
    p.add_argument(
        "--config", metavar="FILE", help="TOML configuration (default: $GATEKEEPER_CONFIG, ./gatekeeper.toml)"
    )
    p.add_argument("--version", action="version", version=f"gatekeeper {__version__}")
    logs.add_arguments(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    imp = sub.add_parser("import", help="load consent, customer, objection and suppression records")
    imp.add_argument("file", metavar="FILE", help="CSV or JSON Lines (header tenant,number,kind,start,end,reference)")
    imp.add_argument("--replace", action="store_true", help="full snapshot: replace each tenant's data atomically")
    imp.add_argument("--region", default=None, help="region for national numbers (default: [numbers] default_region)")
    imp.add_argument("--strict", action="store_true", help="refuse the whole file if any row is invalid")
    imp.add_argument(
        "--map",
        metavar="COLUMN=FIELD,…",
        help="which column holds which field, e.g. telefoonnummer=number,klant=tenant (over [import.columns])",
    )

    chk = sub.add_parser("check", help="decide one call")
    chk.add_argument("number", metavar="NUMBER")
    chk.add_argument("--campaign", required=True, metavar="ID")
    chk.add_argument("--at", metavar="ISO-8601", help="call time (without offset: campaign's local time; default now)")
    chk.add_argument("--caller-id", metavar="NUMBER", help="the presented caller ID (rule 5)")
    chk.add_argument("--json", action="store_true", help="print one JSON object")
    chk.add_argument("--record", action="store_true", help="keep the decision in the decision log")

    scr = sub.add_parser("scrub", help="check a call list before a campaign")
    scr.add_argument("list", metavar="LIST.csv")
    scr.add_argument("-o", "--output", required=True, metavar="OUT.csv")
    scr.add_argument("--campaign", required=True, metavar="ID")
    scr.add_argument("--at", metavar="ISO-8601")

    obj = sub.add_parser("object", help="register an objection (takes effect for the next call)")
    obj.add_argument("number", metavar="NUMBER")
    obj.add_argument("--tenant", required=True, metavar="T")
    obj.add_argument("--reference", default="cli", help="pointer to the evidence (default: cli)")
    obj.add_argument("--new-tenant", action="store_true", help="allow a tenant that no configured campaign names")

    era = sub.add_parser("erase", help="erase a number (GDPR art. 17); leaves a global suppression")
    era.add_argument("number", metavar="NUMBER")
    era.add_argument("--reference", default="erasure", help="pointer to the request (default: erasure)")

    sub.add_parser("status", help="show the tenants, their generations, and any split by an interrupted import")

    srv = sub.add_parser("serve", help="run the FastAGI, ARI and HTTP service")
    srv.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    add_log_parser(sub)

    tok = sub.add_parser("token", help="make an API and UI token")
    token_actions = tok.add_subparsers(dest="token_action", required=True, metavar="ACTION")
    create = token_actions.add_parser(
        "create",
        help="show a new token once (stderr) and print its [[http.tokens]] entry (stdout)",
        description="Show a new random token once, on stderr, and print the configuration lines that accept it "
        "(its SHA-256 digest, never the token) on stdout: `gatekeeper token create --role viewer >> "
        "gatekeeper.toml` adds it. Then restart gatekeeper serve.",
    )
    create.add_argument("--role", required=True, choices=[r.value for r in Role], help="what the token may do")
    create.add_argument("--name", metavar="N", help="its name in the audit trail (default: ROLE-<6 hex digits>)")

    demo = sub.add_parser("demo", help="run the out-of-the-box demo (on a private redis-server, keeping nothing)")
    demo.add_argument("--redis-url", default=None, help="use this Redis (the demo removes its keys when it ends)")
    demo.add_argument("--once", action="store_true", help="show the decisions and exit instead of serving")
    demo.add_argument("--workdir", default=".demo", help="where the demo writes its configuration (default .demo)")
    return p


# -- helpers -----------------------------------------------------------------------------------------


def _parse_at(text: str | None, settings: Settings, campaign_id: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at: {text!r} is not an ISO-8601 date-time (e.g. 2026-07-01T10:30)") from None
    if value.tzinfo is None:
        campaign = settings.campaign(campaign_id)
        if campaign is not None:
            tz = campaign.jurisdiction.timezone
        else:
            tz = next(iter(settings.jurisdictions.values())).timezone if settings.jurisdictions else "Europe/Amsterdam"
        value = value.replace(tzinfo=zone(tz))
    return value


def _e164(settings: Settings, text: str) -> str:
    number = normalise(text, settings.default_region, settings.numbers)
    if number.kind is not NumberKind.VALID or number.e164 is None:
        raise UsageError(f"{number.masked if number.e164 else 'the number'} is not a valid telephone number")
    return number.e164


@contextmanager
def _progress(total: int, unit: str) -> Iterator[Callable[[int], None]]:
    bar = tqdm(total=total, unit=f" {unit}", unit_scale=True, disable=not sys.stderr.isatty(), file=sys.stderr)

    def advance(done: int) -> None:
        bar.update(done - bar.n)

    try:
        yield advance
    finally:
        bar.close()


async def _with_index(settings: Settings, work: Callable[[ConsentIndex], Awaitable[int]]) -> int:
    index = ConsentIndex.from_settings(settings.index)
    try:
        return await work(index)
    finally:
        await index.close()


def _print_decision(record: DecisionRecord, settings: Settings, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(record.public_json(), ensure_ascii=False) + "\n")
        return
    verdict = "ALLOW (monitor: would block)" if record.would_block else record.verdict.value.upper()
    regime = f", regime {record.regime}" if record.regime else ""
    out.write(f"{verdict} {record.reason.value}  [{record.number_masked}, campaign {record.campaign}{regime}]\n")
    campaign = settings.campaign(record.campaign)
    tz = zone(campaign.jurisdiction.timezone) if campaign is not None else UTC
    out.write(f"  call time {shown(record.at, tz)}\n")  # the campaign's zone, like the explanation's times
    out.write(f"  {record.explanation}\n")
    if record.index_error:
        out.write(f"  (index error: {record.index_error})\n")


# -- commands ----------------------------------------------------------------------------------------


async def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    at = _parse_at(args.at, settings, args.campaign)
    request = CallRequest(dialled=args.number, campaign=args.campaign, caller_id=args.caller_id, at=at)

    async def work(index: ConsentIndex) -> int:
        budget = max(settings.index.timeout, 2.0)
        make = command_gate if args.record else dry_gate
        try:
            record = await make(settings, index, budget=budget).check(request)
        except EvidenceError as exc:
            sys.stderr.write(f"gatekeeper: {exc}; no verdict is given without its record\n")
            return EXIT_UNAVAILABLE
        _print_decision(record, settings, args.json, sys.stdout)
        return EXIT_OK if record.allowed else EXIT_BLOCK

    return await _with_index(settings, work)


REPORTED_ROWS = 50  # errors and warnings of each kind listed one by one
WARNING_TITLES = {  # kind -> (verb for one row, for several, the rest)
    WarningKind.DUPLICATE: ("repeats", "repeat", "the fact of an earlier row (stored once)"),
    WarningKind.FUTURE: ("starts", "start", "after the import (the fact counts only from then)"),
}


def _report(report: ImportReport, out: TextIO) -> None:
    if report.refused:
        out.write(f"refused: {report.error_count:,} invalid rows in {report.source} (--strict); nothing was imported\n")
    else:
        for repair in report.repairs:
            out.write(f"repaired: {repair}\n")
        out.write(
            f"imported {report.accepted:,} of {report.rows:,} rows from {report.source} in {report.seconds:.1f} s "
            f"({report.rows_per_second:,.0f} rows/s)\n"
        )
        for tenant, t in sorted(report.tenants.items()):
            how = (
                f"new generation {t.generation} switched in"
                if t.new_generation
                else f"merged into generation {t.generation}"
            )
            skipped = (
                f", {t.skipped_suppressed:,} rows for suppressed numbers not stored" if t.skipped_suppressed else ""
            )
            out.write(f"  tenant {tenant}: {how} ({t.rows:,} rows, {t.records_created:,} new records{skipped})\n")
        if report.suppressions:
            out.write(f"  global suppressions: {report.suppressions:,} rows\n")
    for kind, count in sorted(report.warning_counts.items()):
        one, several, rest = WARNING_TITLES[kind]
        out.write(f"warning: {count:,} {f'row {one}' if count == 1 else f'rows {several}'} {rest}:\n")
        for warning in report.warnings[kind][:REPORTED_ROWS]:
            out.write(f"  {warning}\n")
        if count > REPORTED_ROWS:
            out.write(f"  … and {count - REPORTED_ROWS:,} more\n")
    if report.error_count:
        out.write(f"{report.error_count:,} invalid rows{'' if report.refused else ' skipped'}:\n")
        for error in report.errors[:REPORTED_ROWS]:
            out.write(f"  {error}\n")
        if report.error_count > REPORTED_ROWS:
            out.write(f"  … and {report.error_count - REPORTED_ROWS:,} more; by kind:\n")
            for kind_text, n in report.error_kinds.most_common(10):
                out.write(f"    {n:>9,}  {kind_text}\n")


def _columns(settings: Settings, option: str | None) -> ColumnMap:
    """The configuration's [import.columns], overridden by --map."""
    columns = ColumnMap.of(settings.imports.columns, MAP_TABLE)
    if option is None:
        return columns
    try:
        return columns.then(ColumnMap.parse(option))
    except ColumnMapError as exc:
        raise UsageError(str(exc)) from None


async def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    region = (args.region or settings.default_region).upper()
    columns = _columns(settings, args.map)

    async def work(index: ConsentIndex) -> int:
        loader = Loader(index)
        with _progress(count_lines(path), "rows") as progress:
            report = await loader.load(
                path, region=region, replace=args.replace, strict=args.strict, progress=progress, columns=columns
            )
        clean = not report.error_count and not report.warning_counts
        _report(report, sys.stdout if clean else sys.stderr)
        return EXIT_BLOCK if report.error_count else EXIT_OK

    return await _with_index(settings, work)


_QUOTED_FIELD = r'"(?:[^"]|"")*"'


@dataclass(frozen=True, slots=True)
class ListFormat:
    """How a call list is written (delimiter, quoting, line ends, byte order mark): the scrubbed list keeps it."""

    delimiter: str
    quote_all: bool
    line_end: str
    bom: bool

    @classmethod
    def of(cls, path: Path) -> ListFormat:
        with path.open("rb") as f:
            first_bytes = f.readline()
        bom = first_bytes.startswith(codecs.BOM_UTF8)
        first = first_bytes.decode("utf-8-sig", errors="replace")
        header = first.rstrip("\r\n")
        delimiter = detect_delimiter(header)
        quote_all = bool(re.fullmatch(f"{_QUOTED_FIELD}(?:{re.escape(delimiter)}{_QUOTED_FIELD})*", header))
        return cls(delimiter, quote_all, "\r\n" if first.endswith("\r\n") else "\n", bom)

    def writer(self, out: TextIO) -> CsvWriter:
        if self.quote_all:
            return csv.writer(out, delimiter=self.delimiter, quoting=csv.QUOTE_ALL, lineterminator=self.line_end)
        return csv.writer(out, delimiter=self.delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator=self.line_end)

    @property
    def encoding(self) -> str:
        return "utf-8-sig" if self.bom else "utf-8"


_NUMBER_COLUMN_NAMES = f"{NUMBER_COLUMNS[0]} (or {', '.join(NUMBER_COLUMNS[1:])})"
_PHONE_LIKE = re.compile(r"\+?[0-9][0-9 ()./-]*")
MIN_PHONE_DIGITS = 6


def _phone_like(text: str) -> bool:
    """Written like a telephone number (digits and the usual separators); valid or not is for the gate."""
    text = text.strip()
    return bool(_PHONE_LIKE.fullmatch(text)) and sum(c.isdigit() for c in text) >= MIN_PHONE_DIGITS


def _number_column(source: Path, header: list[str], sample: list[list[str]]) -> int:
    """The column of the numbers: a known name, else the first column if it holds numbers; else UsageError."""
    lowered = [h.strip().lower() for h in header]
    named = next((lowered.index(c) for c in NUMBER_COLUMNS if c in lowered), None)
    if named is not None:
        return named
    if header and _phone_like(header[0]):
        raise UsageError(f"{source}: line 1 is a telephone number, not a header; add a header line that names "
                         f"the number column {_NUMBER_COLUMN_NAMES}")  # fmt: skip

    def numbers_in(column: int) -> bool:
        values = [r[column] for r in sample if column < len(r) and r[column].strip()]
        return bool(values) and sum(map(_phone_like, values)) * 2 >= len(values)

    if numbers_in(0):
        return 0
    likely = [header[i] for i in range(1, len(header)) if numbers_in(i)]
    hint = f" (column {likely[0]!r} looks like telephone numbers)" if likely else ""
    raise UsageError(f"{source}: no column of telephone numbers: the header has {', '.join(map(repr, header))}; "
                     f"rename the number column to {_NUMBER_COLUMN_NAMES}{hint}")  # fmt: skip


async def cmd_scrub(settings: Settings, args: argparse.Namespace) -> int:
    source, target = Path(args.list), Path(args.output)
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    at = _parse_at(args.at, settings, args.campaign) or dt.datetime.now(dt.UTC)
    fmt = ListFormat.of(source)
    # Written beside the target and renamed into place when complete: a refused or interrupted scrub leaves
    # no half-written list, and an earlier one stays as it was.
    partial = target.with_name(f".{target.name}.partial")

    async def work(index: ConsentIndex) -> int:
        gate = dry_gate(settings, index, budget=30.0)
        counts: dict[str, int] = {}
        with source.open(newline="", encoding="utf-8-sig") as fin:
            reader = csv.reader(fin, delimiter=fmt.delimiter)
            try:
                header = next(reader, None)
                if header is None:
                    raise UsageError(f"{source}: empty file")
                sample = [r for _, r in zip(range(SCRUB_SAMPLE), reader, strict=False)]
                column = _number_column(source, header, sample)
                with (
                    partial.open("w", newline="", encoding=fmt.encoding) as fout,
                    _progress(count_lines(source), "rows") as progress,
                ):
                    done = await _scrub_rows(gate, args.campaign, at, column, header, chain(sample, reader),
                                             fmt.writer(fout), counts, progress)  # fmt: skip
            except UnicodeDecodeError as exc:
                raise UsageError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                 "save it as CSV UTF-8") from None  # fmt: skip
            except csv.Error as exc:
                raise UsageError(f"{source}: line {reader.line_num}: malformed CSV: {exc}") from None
        partial.replace(target)
        summary = ", ".join(f"{reason} {n:,}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        sys.stdout.write(f"scrubbed {done:,} rows into {target}: {summary}\n")
        return EXIT_OK

    try:
        return await _with_index(settings, work)
    finally:
        partial.unlink(missing_ok=True)


async def _scrub_rows(
    gate: Gate, campaign: str, at: dt.datetime, column: int, header: list[str], rows: Iterator[list[str]],
    writer: CsvWriter, counts: dict[str, int], progress: Callable[[int], None],
) -> int:  # fmt: skip
    """Decide every row and write it with the verdict columns added; returns the number of rows."""
    lowered = [h.strip().lower() for h in header]
    added = [n if n not in lowered else f"gk_{n}" for n in ("verdict", "reason", "would_block", "regime")]
    writer.writerow([*header, *added, "explanation"])
    done = 0
    in_flight: deque[tuple[list[list[str]], asyncio.Task[list[Decision]]]] = deque()

    def write(batch: list[list[str]], decisions: list[Decision]) -> None:
        for row, d in zip(batch, decisions, strict=True):
            counts[d.reason.value] = counts.get(d.reason.value, 0) + 1
            extra = [d.verdict.value, d.reason.value, str(d.would_block).lower(), d.regime or "", d.explanation]
            writer.writerow(row + extra)

    # A few batches in flight, so Redis works on one while this process decides another.
    try:
        while True:
            batch = [r for _, r in zip(range(SCRUB_BATCH), rows, strict=False)]
            if batch:
                numbers = [r[column] if column < len(r) else "" for r in batch]
                in_flight.append((batch, asyncio.create_task(gate.check_many(campaign, numbers, at))))
            if in_flight and (len(in_flight) >= SCRUB_IN_FLIGHT or not batch):
                done_rows, task = in_flight.popleft()
                write(done_rows, await task)
                done += len(done_rows)
                progress(done)
            if not batch and not in_flight:
                return done
    finally:
        for _, task in in_flight:
            task.cancel()


def _check_tenant(settings: Settings, tenant: str, *, new: bool) -> None:
    """A tenant that a configured campaign names (as the API requires), or any valid name with `new`."""
    if not NAME.fullmatch(tenant):
        raise UsageError(f"--tenant: {tenant[:64]!r} is not a tenant name (1–64 letters, digits, '_', '.' or '-')")
    if new or tenant in settings.tenants:
        return
    known = sorted(settings.tenants)
    if not known:
        raise UsageError(f"--tenant: no campaign names tenant {tenant!r} (no campaign is configured); "
                         "pass --new-tenant to register the objection anyway")  # fmt: skip
    close = suggestion(tenant, known)
    raise UsageError(
        f"--tenant: no campaign names tenant {tenant!r}{f'; did you mean {close}?' if close else ''} "
        f"(known tenants: {', '.join(known)}); pass --new-tenant to register the objection for a tenant "
        "that has no campaign yet"
    )


async def cmd_object(settings: Settings, args: argparse.Namespace) -> int:
    e164 = _e164(settings, args.number)
    _check_tenant(settings, args.tenant, new=args.new_tenant)

    async def work(index: ConsentIndex) -> int:
        key = await index.object(args.tenant, e164, dt.datetime.now(dt.UTC), args.reference)
        masked = normalise(e164, settings.default_region).masked
        sys.stdout.write(f"objection registered for {masked} (tenant {args.tenant}, hash {key.hash_hex}); "
                         "it blocks the next call\n")  # fmt: skip
        return EXIT_OK

    return await _with_index(settings, work)


async def cmd_erase(settings: Settings, args: argparse.Namespace) -> int:
    e164 = _e164(settings, args.number)

    async def work(index: ConsentIndex) -> int:
        removed = await index.erase(e164, dt.datetime.now(dt.UTC), args.reference)
        masked = normalise(e164, settings.default_region).masked
        sys.stdout.write(f"erased {masked}: {removed} records removed; a global suppression remains\n")
        return EXIT_OK

    return await _with_index(settings, work)


async def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """Every tenant the index or the configuration knows, with its state; exit 1 if one is split."""

    async def work(index: ConsentIndex) -> int:
        health = await tenant_health(index, settings.tenants, count_tags=True)
        campaigns: dict[str, list[str]] = {}
        for campaign in sorted(settings.campaigns.values(), key=lambda c: c.id):
            campaigns.setdefault(campaign.tenant, []).append(campaign.id)
        sys.stdout.write(
            f"index {settings.index.redacted_url} prefix {settings.index.prefix!r}: {len(health)} tenants\n"
        )
        for name, tenant in health.items():
            info = tenant.info
            used_by = f"; campaigns {', '.join(campaigns[name])}" if name in campaigns else "; no campaign"
            if info is not None:
                buckets = 1 << info.sub_bits
                detail = (
                    f"generation {info.generation} ({info.records:,} records, {buckets} bucket"
                    f"{'' if buckets == 1 else 's'} per tag), last import {info.imported_at} from {info.source}"
                )
            else:
                detail = "no data loaded"
            sys.stdout.write(f"  {name}: {detail}{used_by}\n")
            if tenant.condition in (TenantCondition.SPLIT, TenantCondition.SWITCHING):
                sys.stdout.write(f"    {tenant.condition.value.upper()}: {tenant.describe()}\n")
            elif tenant.building:
                sys.stdout.write(f"    note: {tenant.building}\n")
        split = sorted(n for n, t in health.items() if t.condition is TenantCondition.SPLIT)
        if split:
            sys.stderr.write(f"gatekeeper: tenant(s) {', '.join(split)} split between two generations; see above\n")
        return EXIT_BLOCK if split else EXIT_OK

    return await _with_index(settings, work)


def cmd_token_create(role: str, name: str | None, out: TextIO, err: TextIO) -> int:
    """A new token: the secret once on `err` (the terminal), its `[[http.tokens]]` entry on `out`."""
    name = name or f"{role}-{secrets.token_hex(3)}"
    try:
        token, entry = new_token(name, role)
    except ValueError as exc:
        raise UsageError(f"--name: {exc}") from None
    err.write(
        f"New {entry.role} token {entry.name!r}; give it to its user now, it is not shown again (the configuration "
        f"keeps only its SHA-256 digest):\n\n    {token}\n\nAdd the lines on standard output to the configuration "
        "file (at its end, or before or after any table) and restart gatekeeper serve.\n"
    )
    today = dt.datetime.now(dt.UTC).date().isoformat()
    out.write(
        f"\n# API/UI token {entry.name}, created {today} by `gatekeeper token create`\n"
        f"[[http.tokens]]\nname = {json.dumps(entry.name)}\nrole = {json.dumps(entry.role)}\n"
        f"sha256 = {json.dumps(entry.sha256)}\n"
    )
    return EXIT_OK


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "check": cmd_check,
    "import": cmd_import,
    "scrub": cmd_scrub,
    "object": cmd_object,
    "erase": cmd_erase,
    "status": cmd_status,
    "log": cmd_log,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = args.log_level if args.command == "serve" else "warning"
    logs.configure(args.log_format or logs.default_format(), level, batched=args.command == "serve")
    try:
        if args.command == "demo":
            return asyncio.run(run_demo(args.redis_url, keep_serving=not args.once, workdir=Path(args.workdir)))
        if args.command == "token":  # needs no configuration: it makes a line for one
            return cmd_token_create(args.role, args.name, sys.stdout, sys.stderr)
        settings = load(args.config)
        if args.command == "serve":
            return serve(settings)
        return asyncio.run(COMMANDS[args.command](settings, args))
    except (ConfigError, UsageError, ImportFileError, ImportRefused, DemoError) as exc:
        sys.stderr.write(f"gatekeeper: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("gatekeeper: interrupted\n")
        return 130
    except BrokenPipeError:  # output piped into a command that stopped reading (e.g. head)
        return EXIT_OK
    except Exception as exc:
        if is_unavailable(exc):
            sys.stderr.write(f"gatekeeper: the consent index is unavailable: {exc}\n")
            return EXIT_UNAVAILABLE
        raise


if __name__ == "__main__":
    sys.exit(main())
