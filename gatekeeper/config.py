"""Settings: one TOML file plus environment overrides, validated once at start-up.

Every problem is a `ConfigError` that names the file and the key. Secrets (the pepper, passwords in
URLs) never appear in a `repr`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import phonenumbers

from gatekeeper.core import jurisdictions
from gatekeeper.core.calendar import CallingHours, HolidayCalendar, Window, parse_clock, parse_window
from gatekeeper.core.model import Campaign, Jurisdiction, Mode, Organisation, Purpose, Regime
from gatekeeper.core.numbers import DEFAULT_EMERGENCY_NUMBERS, NumberPlan, parse_caller_ids

ENV_CONFIG = "GATEKEEPER_CONFIG"
ENV_REDIS_URL = "GATEKEEPER_REDIS_URL"
ENV_PEPPER = "GATEKEEPER_PEPPER"
ENV_ARI_PASSWORD = "GATEKEEPER_ARI_PASSWORD"  # noqa: S105
ENV_LOG_DSN = "GATEKEEPER_LOG_DSN"
ENV_PEPPER_FILE = "GATEKEEPER_PEPPER_FILE"
DEFAULT_LOCATIONS = (Path("gatekeeper.toml"), Path("/etc/gatekeeper/gatekeeper.toml"))
MIN_PEPPER_LENGTH = 16
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

E = TypeVar("E", bound=StrEnum)
T = TypeVar("T")


class ConfigError(Exception):
    """A configuration problem; the message names the file and the key."""


def redact_url(url: str) -> str:
    """The URL with any password (in the user part or a `…password=` query parameter) replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not parseable as a URL (e.g. an unclosed "[" of an IPv6 host): hide every user part
        masked = re.sub(r"(://)[^/]*@", r"\1***@", url)
        return re.sub(r"(password[^=&]*=)[^&]*", r"\1***", masked, flags=re.IGNORECASE)
    redacted = parts
    if parts.query:
        query = re.sub(r"((?:^|&)[^=&]*password[^=&]*=)[^&]*", r"\1***", parts.query, flags=re.IGNORECASE)
        redacted = redacted._replace(query=query)
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        redacted = redacted._replace(netloc=user + netloc)
    return url if redacted == parts else urlunsplit(redacted)  # unchanged: as written (unix:///path keeps its //)


@dataclass(frozen=True, slots=True)
class IndexSettings:
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    pepper: bytes = field(default=b"", repr=False)
    prefix: str = "gk"
    timeout: float = 0.05  # seconds: the lookup's share of the decision budget
    max_connections: int = 32

    @property
    def redacted_url(self) -> str:
        return redact_url(self.redis_url)

    def __repr__(self) -> str:
        return (
            f"IndexSettings(redis_url={self.redacted_url!r}, pepper=<{len(self.pepper)} bytes>, "
            f"prefix={self.prefix!r}, timeout={self.timeout}, max_connections={self.max_connections})"
        )


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class FastAgiSettings:
    listen: Address = Address("127.0.0.1", 4573)
    allow_from: tuple[IPv4Network | IPv6Network, ...] = (
        ip_network("127.0.0.1/32"),
        ip_network("::1/128"),
    )
    max_sessions: int = 10_000  # connections at once; beyond it a call is refused (the dialplan blocks it)
    max_active: int = 32  # sessions worked on at once; the others wait their turn
    env_timeout: float = 2.0  # seconds to receive the whole environment block
    budget: float = 0.05  # seconds for the decision; after it the call is blocked (index-unavailable)
    reply_timeout: float = 2.0  # seconds to wait for Asterisk's reply to our command
    max_line_bytes: int = 2048
    max_env_lines: int = 128


@dataclass(frozen=True, slots=True)
class ApiToken:
    name: str
    role: str  # admin | compliance | viewer
    sha256: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    listen: Address = Address("127.0.0.1", 8080)
    tokens: tuple[ApiToken, ...] = ()
    session_secret: bytes = field(default=b"", repr=False)  # signs UI session cookies; random when unset


@dataclass(frozen=True, slots=True)
class AriSettings:
    url: str
    username: str
    password: str = field(repr=False)
    app: str = "gatekeeper"
    hangup_blocked: bool = False
    default_campaign: str = ""


@dataclass(frozen=True, slots=True)
class LogSettings:
    dsn: str = field(default="sqlite:///gatekeeper-decisions.db", repr=False)
    retention_days: int = 400
    instance: str = ""  # identifies this gatekeeper in the decision log; default: the host name
    spool_dir: Path | None = None  # where decision records wait while Redis is unreachable
    ship_in_serve: bool = True  # false: `gatekeeper log ship` runs the shipper in a process of its own

    @property
    def redacted_dsn(self) -> str:
        return redact_url(self.dsn)

    @property
    def instance_name(self) -> str:
        """`instance`, or the host name: the name this gatekeeper's decision records carry."""
        return self.instance or os.uname().nodename or "gatekeeper"


@dataclass(frozen=True, slots=True)
class ImportSettings:
    # file column (lower case) -> field, for CRM exports that name their columns otherwise (`[import.columns]`)
    columns: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Settings:
    path: Path | None
    index: IndexSettings
    numbers: NumberPlan
    default_region: str
    campaigns: Mapping[str, Campaign]
    jurisdictions: Mapping[str, Jurisdiction]
    fastagi: FastAgiSettings = field(default_factory=FastAgiSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    ari: AriSettings | None = None
    log: LogSettings = field(default_factory=LogSettings)
    imports: ImportSettings = field(default_factory=ImportSettings)

    def campaign(self, campaign_id: str) -> Campaign | None:
        return self.campaigns.get(campaign_id)

    def region_for(self, campaign: Campaign | None) -> str:
        return campaign.region if campaign is not None else self.default_region

    @property
    def tenants(self) -> frozenset[str]:
        return frozenset(c.tenant for c in self.campaigns.values())


_TOML_TYPES: dict[type, str] = {
    bool: "a boolean (true or false)",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "a table",
    dt.datetime: "a date-time",
    dt.date: "a date",
    dt.time: "a time",
}


def toml_type(value: object) -> str:
    """What a TOML value is, in TOML's words ("an integer", "a table")."""
    return next((name for kind, name in _TOML_TYPES.items() if isinstance(value, kind)), type(value).__name__)


def suggestion(word: str, known: Iterable[str]) -> str | None:
    """The known word closest to a misspelt one ("peper" -> "pepper"), or None if none is close."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return close[0] if close else None


class Table:
    """A TOML table being read: typed getters that name the key on error, and a check for unknown keys.

    A parser declares the keys it knows with `expect` before reading any; then every error raised in
    this table (or in a table inside it) also reports the unknown keys seen so far, each with the known
    key it most resembles, so a misspelt key is named together with the problem it causes
    (`index.peper: unknown key; did you mean pepper?` beside `index.pepper: missing`).
    """

    def __init__(self, data: Mapping[str, Any], where: str, source: str, parent: Table | None = None) -> None:
        self._data = dict(data)
        self._seen: set[str] = set()
        self._known: frozenset[str] | None = None
        self.where = where
        self.source = source
        self.parent = parent

    def expect(self, *keys: str) -> Table:
        """Declare the keys this table may have (any other is reported as unknown)."""
        self._known = frozenset(keys)
        return self

    def _problem(self, key: str | None, message: str) -> str:
        path = f"{self.where}.{key}" if key and self.where else (key or self.where or "(top level)")
        return f"{self.source}: {path}: {message}"

    def _unknown(self) -> list[str]:
        if self._known is None:
            return []
        problems = []
        for key in sorted(set(self._data) - self._known):
            close = suggestion(key, self._known)
            hint = f"did you mean {close}?" if close else f"known here: {', '.join(sorted(self._known)) or 'none'}"
            problems.append(self._problem(key, f"unknown key; {hint}"))
        return problems

    def error(self, key: str | None, message: str) -> ConfigError:
        """The error for `key`, preceded by the unknown keys of this table and of the tables around it."""
        return self._report(self._problem(key, message))

    def _report(self, problem: str | None) -> ConfigError:
        lineage: list[Table] = []
        table: Table | None = self
        while table is not None:
            lineage.append(table)
            table = table.parent
        problems = [p for t in reversed(lineage) for p in t._unknown()]
        if problem is not None and problem not in problems:
            problems.append(problem)
        return ConfigError("\n".join(problems))

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def keys(self) -> Iterator[str]:
        return iter(self._data)

    def raw(self, key: str) -> Any:
        self._seen.add(key)
        return self._data.get(key)

    def get(self, key: str, kind: type[T], default: T) -> T:
        value = self.raw(key)
        if value is None:
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"must be {_TOML_TYPES.get(kind, kind.__name__)}, not {toml_type(value)}")
        return value

    def string(self, key: str, default: str) -> str:
        return self.get(key, str, default)

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "must be an array of strings")
        return tuple(value)

    def choice(self, key: str, enum: type[E], default: E) -> E:
        value = self.string(key, default.value)
        try:
            return enum(value)
        except ValueError:
            allowed = " | ".join(e.value for e in enum)
            raise self.error(key, f"must be one of {allowed} (got {value!r})") from None

    def table(self, key: str) -> Table:
        value = self.raw(key)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table, not {toml_type(value)}")
        return Table(value, f"{self.where}.{key}" if self.where else key, self.source, self)

    def tables(self, key: str) -> Iterator[tuple[str, Table]]:
        outer = self.table(key)
        for name in list(outer.keys()):
            yield name, outer.table(name)

    def entries(self, key: str) -> Iterator[Table]:
        """The tables of an array of tables (`[[http.tokens]]`, `regimes = [ { … }, … ]`)."""
        value = self.raw(key)
        if value is None:
            return
        if not isinstance(value, list):
            raise self.error(key, f"must be an array of tables, not {toml_type(value)}")
        for i, item in enumerate(value):
            where = f"{self.where}.{key}[{i}]" if self.where else f"{key}[{i}]"
            if not isinstance(item, dict):
                raise self.error(f"{key}[{i}]", f"must be a table, not {toml_type(item)}")
            yield Table(item, where, self.source, self)

    def finish(self) -> None:
        """Raise for unknown keys (the declared ones, or else the ones read are the known ones)."""
        if self._known is None:
            self._known = frozenset(self._seen)
        undeclared = self._seen - self._known
        assert not undeclared, f"{self.where}: read but not declared with expect(): {sorted(undeclared)}"
        if set(self._data) - self._known:
            raise self._report(None)


def _parse_index(t: Table, env: Mapping[str, str]) -> IndexSettings:
    t.expect("redis_url", "pepper", "pepper_file", "prefix", "timeout_ms", "max_connections")
    configured_url = t.string("redis_url", "redis://127.0.0.1:6379/0")
    url = env.get(ENV_REDIS_URL) or configured_url
    from gatekeeper.index.connect import parse_redis_url  # noqa: PLC0415 - the index imports this module

    try:
        parse_redis_url(url)
    except ConfigError as exc:
        raise t.error("redis_url", f"{exc}{_from_env(env, ENV_REDIS_URL)}") from None
    configured_pepper = t.string("pepper", "")
    pepper_text = env.get(ENV_PEPPER) or configured_pepper
    configured_file = t.string("pepper_file", "")
    pepper_file = env.get(ENV_PEPPER_FILE) or configured_file
    if not pepper_text and pepper_file:
        try:
            pepper_text = Path(pepper_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise t.error("pepper_file", f"cannot read {pepper_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise t.error("pepper_file", f"{pepper_file} is not UTF-8 text (the pepper is a text secret)") from None
        except ValueError:  # a NUL in the path
            raise t.error("pepper_file", f"{pepper_file!r} is not a file name") from None
    if not pepper_text:
        raise t.error("pepper", f"missing: set [index] pepper, pepper_file or ${ENV_PEPPER} (a secret of at least "
                      f"{MIN_PEPPER_LENGTH} characters; keep it stable, changing it orphans the index)")  # fmt: skip
    if len(pepper_text) < MIN_PEPPER_LENGTH:
        raise t.error("pepper", f"too short: at least {MIN_PEPPER_LENGTH} characters{_from_env(env, ENV_PEPPER)}")
    prefix = t.string("prefix", "gk")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", prefix):
        raise t.error("prefix", "must be 1–32 letters, digits, '_', '.' or '-'")
    timeout_ms = t.get("timeout_ms", float, 50.0)
    if not 0 < timeout_ms <= 10_000:
        raise t.error("timeout_ms", "must be between 0 and 10000")
    max_connections = _positive(t, "max_connections", 32, 10_000)
    t.finish()
    return IndexSettings(url, pepper_text.encode(), prefix, timeout_ms / 1000, max_connections)


def _from_env(env: Mapping[str, str], name: str) -> str:
    return f" (from ${name})" if env.get(name) else ""


_DIGITS = re.compile(r"[0-9]+")


def _parse_numbers(t: Table) -> tuple[NumberPlan, str]:
    t.expect("trunk_prefix", "emergency", "default_region")
    trunk = t.string("trunk_prefix", "")
    if trunk and not _DIGITS.fullmatch(trunk):
        raise t.error("trunk_prefix", "must be digits")
    emergency = t.strings("emergency", tuple(sorted(DEFAULT_EMERGENCY_NUMBERS)))
    bad = [e for e in emergency if not _DIGITS.fullmatch(e)]
    if bad:
        raise t.error("emergency", f"{bad[0]!r} is not a string of digits")
    region = t.string("default_region", "NL").upper()
    _check_region(t, "default_region", region)
    t.finish()
    return NumberPlan(trunk_prefix=trunk, emergency=frozenset(emergency)), region


def _check_region(t: Table, key: str, region: str) -> None:
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise t.error(key, f"{region!r} is not a known region code (ISO 3166 alpha-2, e.g. NL)")


def _date(t: Table, key: str, value: Any) -> dt.date:
    if value is None:
        raise t.error(key, "missing: a date like 2026-07-01")
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise t.error(key, f"{value!r} is not a date (YYYY-MM-DD)")


def _parse_hours(t: Table, base: CallingHours) -> CallingHours:
    t.expect("weekdays", *_WEEKDAYS, "short_days", "short_close")
    weekly = list(base.weekly)

    def windows(key: str) -> tuple[Window, ...] | None:
        text = t.get(key, str, "")
        if not text and key not in t:
            return None
        try:
            return parse_window(text)
        except ValueError as exc:
            raise t.error(key, str(exc)) from None

    if (common := windows("weekdays")) is not None:
        weekly[:5] = [common] * 5
    for i, day in enumerate(_WEEKDAYS):
        if (w := windows(day)) is not None:
            weekly[i] = w
    short_days = base.short_days
    if "short_days" in t:
        parsed = set()
        for text in t.strings("short_days"):
            match = re.fullmatch(r"([0-9]{1,2})-([0-9]{1,2})", text.strip())
            try:
                if match is None:
                    raise ValueError(text)
                month, mday = int(match[1]), int(match[2])
                dt.date(2000, month, mday)  # a leap year: 02-29 is a day
            except ValueError:
                raise t.error("short_days", f"{text!r} is not a day like 12-05 (MM-DD)") from None
            parsed.add((month, mday))
        short_days = frozenset(parsed)
    short_close = base.short_close
    if "short_close" in t:
        try:
            short_close = parse_clock(t.string("short_close", ""))
        except ValueError as exc:
            raise t.error("short_close", str(exc)) from None
    t.finish()
    return replace(base, weekly=tuple(weekly), short_days=short_days, short_close=short_close)


def _parse_holidays(t: Table, base: HolidayCalendar) -> HolidayCalendar:
    t.expect("extra", "exclude")
    extra = dict(base.extra)
    extra_table = t.table("extra")
    for key in list(extra_table.keys()):
        extra[_date(extra_table, key, key)] = extra_table.string(key, key)
    extra_table.finish()
    excluded = set(base.excluded)
    dates = t.raw("exclude") or []
    if not isinstance(dates, list):
        raise t.error("exclude", f"must be an array of dates, not {toml_type(dates)}")
    excluded.update(_date(t, "exclude", v) for v in dates)
    t.finish()
    return HolidayCalendar(base.rules, extra, frozenset(excluded))


def _organisations(t: Table, key: str) -> frozenset[Organisation]:
    allowed = {o.value: o for o in Organisation}
    names = t.strings(key)
    bad = [n for n in names if n not in allowed]
    if bad:
        raise t.error(key, f"{bad[0]!r} is not one of {' | '.join(allowed)}")
    return frozenset(allowed[n] for n in names)


def _parse_regimes(t: Table, key: str, base: Jurisdiction, years: int | None) -> tuple[tuple[dt.date, Regime], ...]:
    value = t.raw(key)
    if value is None:
        regimes = base.regimes
    else:
        if not isinstance(value, list) or not value:
            raise t.error(key, 'must be a non-empty array of tables like { from = 2026-07-01, regime = "nl-2026" }')
        parsed = []
        for entry in t.entries(key):
            entry.expect("from", "regime", "relationship_organisations")
            start = _date(entry, "from", entry.raw("from"))
            name = entry.string("regime", "")
            if not name:
                raise entry.error("regime", f"missing: one of {', '.join(jurisdictions.KNOWN_REGIMES)} or a new name")
            known = jurisdictions.KNOWN_REGIMES.get(name)
            if known is None and "relationship_organisations" not in entry:
                close = suggestion(name, jurisdictions.KNOWN_REGIMES)
                hint = f"did you mean {close}? Or" if close else "to add a regime,"
                raise entry.error("regime", f"unknown regime {name!r}; {hint} define relationship_organisations for it")
            regime = known or Regime(name, frozenset(), summary=name)
            if "relationship_organisations" in entry:
                regime = replace(regime, relationship_organisations=_organisations(entry, "relationship_organisations"))
            entry.finish()
            parsed.append((start, regime))
        if [d for d, _ in parsed] != sorted(d for d, _ in parsed):
            raise t.error(key, "must be in date order")
        regimes = tuple(parsed)
    if years is not None:
        regimes = tuple((d, replace(r, former_customer_years=years)) for d, r in regimes)
    return regimes


def _parse_jurisdiction(code: str, t: Table) -> Jurisdiction:
    t.expect("timezone", "former_customer_years", "regimes", "hours", "holidays")
    try:
        base = jurisdictions.builtin(code)
    except KeyError as exc:
        raise t.error(None, str(exc.args[0])) from None
    tz = t.string("timezone", base.timezone)
    try:
        ZoneInfo(tz)
    except (ValueError, LookupError, OSError):  # OSError: a directory ("Europe"), a name too long
        raise t.error("timezone", f"unknown time zone {tz!r} (an IANA name like Europe/Amsterdam)") from None
    years = t.get("former_customer_years", int, 0) or None
    if years is not None and not 0 < years <= 50:
        raise t.error("former_customer_years", "must be between 1 and 50")
    regimes = _parse_regimes(t, "regimes", base, years)
    hours = _parse_hours(t.table("hours"), base.hours)
    hours = replace(hours, holidays=_parse_holidays(t.table("holidays"), hours.holidays))
    t.finish()
    return replace(base, timezone=tz, regimes=regimes, hours=hours)


def _parse_jurisdictions(top: Table) -> dict[str, Jurisdiction]:
    parsed: dict[str, Jurisdiction] = {}
    spelt: dict[str, str] = {}
    for code, t in top.tables("jurisdictions"):
        upper = code.upper()
        if upper in spelt:
            raise t.error(None, f"configured twice (as {spelt[upper]} and {code})")
        spelt[upper] = code
        parsed[upper] = _parse_jurisdiction(upper, t)
    return parsed


def _parse_campaign(cid: str, t: Table, juris: Mapping[str, Jurisdiction]) -> Campaign:
    t.expect("tenant", "jurisdiction", "region", "caller_ids", "purpose", "organisation", "mode")
    if not NAME.fullmatch(cid):
        raise t.error(None, "campaign ids are 1–64 letters, digits, '_', '.' or '-'")
    tenant = t.string("tenant", "")
    if not tenant:
        raise t.error("tenant", "missing")
    if not NAME.fullmatch(tenant):
        raise t.error("tenant", "must be 1–64 letters, digits, '_', '.' or '-'")
    code = t.string("jurisdiction", "NL").upper()
    jurisdiction = juris.get(code)
    if jurisdiction is None:
        try:
            jurisdiction = jurisdictions.builtin(code)
        except KeyError as exc:
            raise t.error("jurisdiction", str(exc.args[0])) from None
    region = t.string("region", code).upper()
    _check_region(t, "region", region)
    try:
        caller_ids = parse_caller_ids(t.strings("caller_ids"), region)
    except ValueError as exc:
        raise t.error("caller_ids", str(exc)) from None
    campaign = Campaign(
        id=cid,
        tenant=tenant,
        jurisdiction=jurisdiction,
        purpose=t.choice("purpose", Purpose, Purpose.TELEMARKETING),
        organisation=t.choice("organisation", Organisation, Organisation.COMMERCIAL),
        region=region,
        mode=t.choice("mode", Mode, Mode.ENFORCE),
        caller_ids=caller_ids,
    )
    t.finish()
    return campaign


_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def _address(t: Table, key: str, default: Address) -> Address:
    text = t.string(key, str(default))
    host, sep, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    try:
        valid_host = bool(ip_address(host)) if bracketed else bool(_HOST.fullmatch(host))  # IPv6 only in [ ]
    except ValueError:
        valid_host = False
    if not sep or not valid_host or not _DIGITS.fullmatch(port) or int(port) > 65535:  # port 0: any free port
        raise t.error(key, f"{text!r} is not an address like 127.0.0.1:4573 (IPv6: [::1]:4573)")
    return Address(host, int(port))


def _url(t: Table, key: str, url: str, schemes: tuple[str, ...], example: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as exc:
        raise t.error(key, f"{redact_url(url)!r} is not a valid URL ({exc})") from None
    if parts.scheme not in schemes:
        raise t.error(key, f"{redact_url(url)!r}: use {example}")
    return parts


def _milliseconds(t: Table, key: str, default: float, upper: float) -> float:
    value = t.get(key, float, default * 1000)
    if not 0 < value <= upper:
        raise t.error(key, f"must be between 0 and {upper:g}")
    return value / 1000


def _positive(t: Table, key: str, default: int, upper: int) -> int:
    value = t.get(key, int, default)
    if not 0 < value <= upper:
        raise t.error(key, f"must be between 1 and {upper}")
    return value


def _parse_fastagi(t: Table) -> FastAgiSettings:
    t.expect(
        "listen", "allow_from", "max_sessions", "max_active", "env_timeout_ms", "budget_ms", "reply_timeout_ms",
        "max_line_bytes", "max_env_lines",
    )  # fmt: skip
    base = FastAgiSettings()
    networks = []
    for text in t.strings("allow_from", tuple(str(n) for n in base.allow_from)):
        try:
            networks.append(ip_network(text, strict=False))
        except ValueError:
            raise t.error("allow_from", f"{text!r} is not a network like 127.0.0.1/32") from None
    settings = FastAgiSettings(
        listen=_address(t, "listen", base.listen),
        allow_from=tuple(networks),
        max_sessions=_positive(t, "max_sessions", base.max_sessions, 100_000),
        max_active=_positive(t, "max_active", base.max_active, 10_000),
        env_timeout=_milliseconds(t, "env_timeout_ms", base.env_timeout, 60_000),
        budget=_milliseconds(t, "budget_ms", base.budget, 10_000),
        reply_timeout=_milliseconds(t, "reply_timeout_ms", base.reply_timeout, 60_000),
        max_line_bytes=_positive(t, "max_line_bytes", base.max_line_bytes, 65_536),
        max_env_lines=_positive(t, "max_env_lines", base.max_env_lines, 10_000),
    )
    t.finish()
    return settings


ROLES = ("admin", "compliance", "viewer")


def _parse_http(t: Table) -> HttpSettings:
    t.expect("listen", "tokens", "session_secret")
    base = HttpSettings()
    tokens = []
    for entry in t.entries("tokens"):
        entry.expect("name", "role", "sha256")
        name = entry.string("name", "")
        if not NAME.fullmatch(name):
            raise entry.error("name", "missing or not 1–64 letters, digits, '_', '.' or '-'")
        role = entry.string("role", "")
        if role not in ROLES:
            raise entry.error("role", f"must be one of {' | '.join(ROLES)} (got {role!r})")
        digest = entry.string("sha256", "").lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise entry.error("sha256", "must be the SHA-256 hex digest of the token (64 hex digits; "
                              "`gatekeeper token create` prints it)")  # fmt: skip
        entry.finish()
        tokens.append(ApiToken(name, role, digest))
    if len({tk.name for tk in tokens}) != len(tokens):
        raise t.error("tokens", "token names must be unique")
    secret = t.string("session_secret", "")
    if secret and len(secret) < MIN_PEPPER_LENGTH:
        raise t.error("session_secret", f"too short: at least {MIN_PEPPER_LENGTH} characters")
    settings = HttpSettings(
        listen=_address(t, "listen", base.listen), tokens=tuple(tokens), session_secret=secret.encode()
    )
    t.finish()
    return settings


def _parse_ari(t: Table, env: Mapping[str, str], campaigns: Mapping[str, Campaign]) -> AriSettings:
    t.expect("url", "username", "password", "app", "hangup_blocked", "default_campaign")
    url = t.string("url", "http://127.0.0.1:8088")
    _url(t, "url", url, ("http", "https"), "an http:// or https:// URL")
    username = t.string("username", "")
    if not username:
        raise t.error("username", "missing")
    configured = t.string("password", "")
    password = env.get(ENV_ARI_PASSWORD) or configured
    if not password:
        raise t.error("password", f"missing: set [ari] password or ${ENV_ARI_PASSWORD}")
    app = t.string("app", "gatekeeper")
    if not NAME.fullmatch(app):
        raise t.error("app", "must be 1–64 letters, digits, '_', '.' or '-'")
    default_campaign = t.string("default_campaign", "")
    if default_campaign and default_campaign not in campaigns:
        close = suggestion(default_campaign, campaigns)
        hint = f"; did you mean {close}?" if close else ""
        raise t.error("default_campaign", f"no campaign {default_campaign!r} is configured{hint}")
    settings = AriSettings(
        url=url.rstrip("/"),
        username=username,
        password=password,
        app=app,
        hangup_blocked=t.get("hangup_blocked", bool, False),
        default_campaign=default_campaign,
    )
    t.finish()
    return settings


def sqlite_path(dsn: str) -> Path:
    """The file a `sqlite:` DSN names.

    `sqlite:///var/lib/gatekeeper/decisions.db` is absolute; a bare file name (`sqlite:///decisions.db`,
    `sqlite:decisions.db`) is relative to the working directory, as is `sqlite:dir/decisions.db`;
    `sqlite:////abs.db` (four slashes) is absolute too.
    """
    parts = urlsplit(dsn)
    if parts.scheme != "sqlite":
        raise ValueError(f"not a sqlite: DSN: {dsn!r}")
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"{dsn!r}: a SQLite DSN names a local file (sqlite:///PATH)")
    path = unquote(parts.path)
    if not path.strip("/"):
        raise ValueError(f"{dsn!r}: no file name (use sqlite:///PATH)")
    if path.startswith("//"):
        return Path(path[1:])
    if path.startswith("/") and "/" not in path[1:]:
        return Path(path[1:])
    return Path(path)


def _parse_log(t: Table, env: Mapping[str, str]) -> LogSettings:
    t.expect("dsn", "instance", "spool_dir", "retention_days", "ship_in_serve")
    base = LogSettings()
    configured = t.string("dsn", base.dsn)
    dsn = env.get(ENV_LOG_DSN) or configured
    where = _from_env(env, ENV_LOG_DSN)
    parts = _url(t, "dsn", dsn, ("sqlite", "postgresql", "postgres"), "sqlite:///PATH or postgresql://…")
    if parts.scheme == "sqlite":
        try:
            sqlite_path(dsn)
        except ValueError as exc:
            raise t.error("dsn", f"{exc}{where}") from None
    instance = t.string("instance", "")
    if instance and not NAME.fullmatch(instance):
        raise t.error("instance", "must be 1–64 letters, digits, '_', '.' or '-'")
    spool = t.string("spool_dir", "")
    if "\0" in spool:
        raise t.error("spool_dir", "not a directory name (it contains a NUL character)")
    settings = LogSettings(
        dsn=dsn,
        retention_days=_positive(t, "retention_days", base.retention_days, 36_500),
        instance=instance,
        spool_dir=Path(spool) if spool else None,
        ship_in_serve=t.get("ship_in_serve", bool, base.ship_in_serve),
    )
    t.finish()
    return settings


def _parse_import(t: Table) -> ImportSettings:
    from gatekeeper.index.rows import MAP_TABLE, ColumnMap, ColumnMapError  # noqa: PLC0415 - rows imports this module

    t.expect("columns")
    table = t.table("columns")
    pairs = [(column, table.string(column, "")) for column in list(table.keys())]
    table.finish()
    t.finish()
    try:
        columns = ColumnMap.of(pairs, MAP_TABLE)
    except ColumnMapError as exc:
        raise t.error("columns", str(exc).removeprefix(f"{MAP_TABLE}: ")) from None
    return ImportSettings(tuple((m.column, m.field) for m in columns.mappings))


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the configuration file (or the default locations) and apply environment overrides."""
    env = os.environ if env is None else env
    chosen = Path(path) if path else (Path(env[ENV_CONFIG]) if env.get(ENV_CONFIG) else None)
    if chosen is None:
        chosen = next((p for p in DEFAULT_LOCATIONS if p.is_file()), None)
    if chosen is None:
        raise ConfigError(
            f"no configuration file: pass --config FILE, set ${ENV_CONFIG}, or create "
            f"{' or '.join(str(p) for p in DEFAULT_LOCATIONS)}"
        )
    try:
        data = tomllib.loads(chosen.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{chosen}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{chosen}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{chosen}: not valid TOML: {exc}") from None
    return parse(data, str(chosen), env, chosen)


def parse(data: Mapping[str, Any], source: str, env: Mapping[str, str], path: Path | None = None) -> Settings:
    top = Table(data, "", source).expect(
        "index", "numbers", "jurisdictions", "campaigns", "fastagi", "http", "ari", "log", "import"
    )
    index = _parse_index(top.table("index"), env)
    plan, region = _parse_numbers(top.table("numbers"))
    juris = _parse_jurisdictions(top)
    campaigns = {cid: _parse_campaign(cid, t, juris) for cid, t in top.tables("campaigns")}
    fastagi = _parse_fastagi(top.table("fastagi"))
    http = _parse_http(top.table("http"))
    ari = _parse_ari(top.table("ari"), env, campaigns) if "ari" in top else None
    log = _parse_log(top.table("log"), env)
    imports = _parse_import(top.table("import"))
    top.finish()
    return Settings(
        path=path,
        index=index,
        numbers=plan,
        default_region=region,
        campaigns=campaigns,
        jurisdictions=juris,
        fastagi=fastagi,
        http=http,
        ari=ari,
        log=log,
        imports=imports,
    )
