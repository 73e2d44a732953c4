from __future__ import annotations

import contextlib
import copy
import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatekeeper.config import ConfigError, load, parse, redact_url
from gatekeeper.core.model import Mode, Organisation, Purpose
from tests.readme import fill_placeholders, toml_blocks

PEPPER = "0123456789abcdef0123"
BASE = f"""
[index]
redis_url = "redis://127.0.0.1:6379/0"
pepper = "{PEPPER}"

[campaigns.acme-sales]
tenant = "acme"
purpose = "telemarketing"
organisation = "commercial"
jurisdiction = "NL"
region = "NL"
mode = "enforce"
caller_ids = ["+31201234567"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gatekeeper.toml"
    path.write_text(text)
    return path


def test_the_documented_example_loads(tmp_path: Path) -> None:
    settings = load(write(tmp_path, BASE), env={})
    campaign = settings.campaigns["acme-sales"]
    assert (campaign.tenant, campaign.purpose, campaign.organisation, campaign.mode) == (
        "acme",
        Purpose.TELEMARKETING,
        Organisation.COMMERCIAL,
        Mode.ENFORCE,
    )
    assert campaign.caller_ids == frozenset({"+31201234567"})
    assert campaign.jurisdiction.code == "NL"
    assert settings.index.pepper == PEPPER.encode()


def test_environment_overrides(tmp_path: Path) -> None:
    env = {"GATEKEEPER_REDIS_URL": "redis://:s3cret@10.0.0.1:6380/2", "GATEKEEPER_PEPPER": "x" * 20}
    settings = load(write(tmp_path, BASE), env=env)
    assert settings.index.redis_url == "redis://:s3cret@10.0.0.1:6380/2"
    assert settings.index.pepper == b"x" * 20
    assert "s3cret" not in repr(settings) and "xxxx" not in repr(settings)
    assert "s3cret" not in repr(settings.index)
    config_env = {"GATEKEEPER_CONFIG": str(write(tmp_path, BASE))}
    assert load(None, env=config_env).campaigns


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace(f'pepper = "{PEPPER}"', ""), r"gatekeeper.toml: index.pepper: missing"),
        (lambda t: t.replace(f'pepper = "{PEPPER}"', 'pepper = "short"'), r"index.pepper: too short"),
        (lambda t: t.replace('purpose = "telemarketing"', 'purpose = "sales"'),
         r"campaigns.acme-sales.purpose: must be one of telemarketing \| service \(got 'sales'\)"),
        (lambda t: t.replace('mode = "enforce"', 'mode = "on"'), r"campaigns.acme-sales.mode: must be one of"),
        (lambda t: t.replace('organisation = "commercial"', 'organisation = "ngo"'), r"acme-sales.organisation"),
        (lambda t: t.replace('region = "NL"', 'region = "XX"'), r"acme-sales.region: 'XX' is not a known region"),
        (lambda t: t.replace('jurisdiction = "NL"', 'jurisdiction = "ZZ"'), r"acme-sales.jurisdiction: unknown"),
        (lambda t: t.replace('"+31201234567"', '"12"'), r"acme-sales.caller_ids: '12' is not a valid"),
        (lambda t: t + 'purpse = "x"\n', r"campaigns.acme-sales.purpse: unknown key"),
        (lambda t: t.replace('tenant = "acme"', 'tenant = "a b"'), r"acme-sales.tenant: must be"),
        (lambda t: t.replace('tenant = "acme"', ""), r"acme-sales.tenant: missing"),
        (lambda t: t + "[surprise]\n", r"gatekeeper.toml: surprise: unknown key"),
        (lambda t: t.replace("redis://", "http://"), r"index.redis_url: .*unsupported scheme"),
        (lambda t: t.replace("[index]", "[index]\ntimeout_ms = -1"), r"index.timeout_ms"),
        (lambda t: t.replace("[index]", "[index]\ntimeout_ms = \"fast\""),
         r"index.timeout_ms: must be a number, not a string"),
        (lambda t: t + "\n[jurisdictions.NL.hours]\nsaturday = \"16:00-10:00\"\n", r"jurisdictions.NL.hours.saturday"),
        (lambda t: t + "\n[numbers]\ntrunk_prefix = \"x\"\n", r"numbers.trunk_prefix: must be digits"),
        (lambda t: t + "=", r"not valid TOML"),
    ],
)  # fmt: skip
def test_errors_name_the_file_and_the_key(tmp_path: Path, change: object, message: str) -> None:
    assert callable(change)
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, change(BASE)), env={})


def test_missing_file_and_no_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "nope.toml", env={})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no configuration file"):
        load(None, env={})


def test_jurisdiction_overrides(tmp_path: Path) -> None:
    text = (
        BASE
        + """
[jurisdictions.NL]
former_customer_years = 2
regimes = [ { from = 2021-07-01, regime = "nl-2021" }, { from = 2027-01-01, regime = "nl-2026" } ]
[jurisdictions.NL.hours]
weekdays = "09:00-21:00"
saturday = "closed"
short_close = "18:00"
[jurisdictions.NL.holidays]
exclude = ["2026-05-05"]
extra = { 2026-08-03 = "Company day" }
"""
    )
    settings = load(write(tmp_path, text), env={})
    nl = settings.campaigns["acme-sales"].jurisdiction
    assert nl.regime_on(dt.date(2026, 12, 31)).name == "nl-2021"
    assert nl.regime_on(dt.date(2027, 1, 1)).name == "nl-2026"
    assert nl.regime_on(dt.date(2027, 1, 1)).former_customer_years == 2
    assert nl.hours.weekly[5] == ()
    assert str(nl.hours.weekly[0][0]) == "09:00–21:00"
    assert nl.hours.short_close == dt.time(18, 0)
    assert nl.hours.holidays.holiday(dt.date(2026, 5, 5)) is None
    assert nl.hours.holidays.holiday(dt.date(2026, 8, 3)) == "Company day"


def test_parse_without_campaigns_is_valid() -> None:
    settings = parse({"index": {"pepper": PEPPER}}, "inline", {})
    assert settings.campaigns == {}
    assert settings.default_region == "NL"


def test_redact_url() -> None:
    assert redact_url("redis://user:pw@host:1/0") == "redis://user:***@host:1/0"
    assert redact_url("redis://host:1/0") == "redis://host:1/0"


def test_a_misspelt_required_key_is_named_with_a_suggestion_beside_the_missing_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load(write(tmp_path, BASE.replace("pepper =", "peper =")), env={})
    assert str(raised.value).splitlines() == [
        f"{tmp_path / 'gatekeeper.toml'}: index.peper: unknown key; did you mean pepper?",
        f"{tmp_path / 'gatekeeper.toml'}: index.pepper: missing: set [index] pepper, pepper_file or "
        "$GATEKEEPER_PEPPER (a secret of at least 16 characters; keep it stable, changing it orphans the index)",
    ]


def test_a_misspelt_table_is_named_beside_the_error_it_causes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load(write(tmp_path, BASE.replace("[index]", "[indx]")), env={})
    lines = str(raised.value).splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("gatekeeper.toml: indx: unknown key; did you mean index?")
    assert lines[1].endswith("gatekeeper.toml: index.pepper: missing: set [index] pepper, pepper_file or "
                             "$GATEKEEPER_PEPPER (a secret of at least 16 characters; keep it stable, changing it "
                             "orphans the index)")  # fmt: skip


def test_every_unknown_key_of_a_table_is_reported_once(tmp_path: Path) -> None:
    text = BASE.replace('mode = "enforce"', 'mdoe = "enforce"\ncolour = "blue"')
    with pytest.raises(ConfigError) as raised:
        load(write(tmp_path, text), env={})
    lines = [line.split(": ", 1)[1] for line in str(raised.value).splitlines()]
    assert lines == [
        "campaigns.acme-sales.colour: unknown key; known here: caller_ids, jurisdiction, mode, organisation, "
        "purpose, region, tenant",
        "campaigns.acme-sales.mdoe: unknown key; did you mean mode?",
    ]


HOURS = "\n[jurisdictions.NL.hours]\n"
WINDOW_FORM = r"of the form HH:MM-HH:MM, e\.g\. \"09:00-22:00\""


@pytest.mark.parametrize(
    ("addition", "message"),
    [
        # calling hours: always the expected form, never a Python error
        (HOURS + 'weekdays = "9-22"', rf"jurisdictions.NL.hours.weekdays: '9-22' is not a window {WINDOW_FORM}"),
        (HOURS + 'weekdays = "0900-2200"', rf"weekdays: '0900-2200' is not a window {WINDOW_FORM}"),
        (HOURS + 'monday = "09:00+01:00-22:00"', rf"hours.monday: '09:00\+01:00-22:00' is not a window {WINDOW_FORM}"),
        (HOURS + 'friday = "T09:00-22:00"', rf"hours.friday: 'T09:00-22:00' is not a window {WINDOW_FORM}"),
        (HOURS + 'saturday = "10:00"', rf"hours.saturday: '10:00' is not a window {WINDOW_FORM}"),
        (HOURS + 'sunday = "nine to five"', rf"hours.sunday: 'nine to five' is not a window {WINDOW_FORM}"),
        (HOURS + 'weekdays = "25:00-26:00"', r"weekdays: '25:00-26:00': '25:00' is not a time of day \(hours 00-23"),
        (HOURS + 'weekdays = "09:00-22:60"', r"weekdays: '09:00-22:60': '22:60' is not a time of day"),
        (HOURS + 'weekdays = "22:00-09:00"', r"weekdays: '22:00-09:00' closes before it opens"),
        (HOURS + 'weekdays = "09:00-12:00,"', r"weekdays: '09:00-12:00,' has an empty window \(a comma too many\?\)"),
        (HOURS + "weekdays = 9", r"hours.weekdays: must be a string, not an integer"),
        (HOURS + 'short_close = "18:30+01:00"', r"short_close: '18:30\+01:00' is not a time of day of the form HH:MM"),
        (HOURS + 'short_close = "6pm"', r"hours.short_close: '6pm' is not a time of day of the form HH:MM"),
        (HOURS + 'short_days = ["12/05"]', r"hours.short_days: '12/05' is not a day like 12-05 \(MM-DD\)"),
        (HOURS + 'short_days = ["02-30"]', r"hours.short_days: '02-30' is not a day like 12-05"),
        (HOURS + 'weekday = "09:00-21:00"', r"jurisdictions.NL.hours.weekday: unknown key; did you mean weekdays\?"),
        # jurisdictions
        ('\n[jurisdictions.NL]\ntimezone = "Europe"', r"NL.timezone: unknown time zone 'Europe' \(an IANA name"),
        (f'\n[jurisdictions.NL]\ntimezone = "{"x" * 300}"', r"NL.timezone: unknown time zone 'xxx"),
        ("\n[jurisdictions.NL]\nregimes = [3]", r"jurisdictions.NL.regimes\[0\]: must be a table, not an integer"),
        ('\n[jurisdictions.NL]\nregimes = [{ regime = "nl-2021" }]', r"NL.regimes\[0\].from: missing: a date"),
        ("\n[jurisdictions.NL]\nregimes = [{ from = 2021-07-01 }]", r"NL.regimes\[0\].regime: missing: one of"),
        ('\n[jurisdictions.NL]\nregimes = [{ from = 2021-07-01, regime = "nl2021" }]',
         r"regimes\[0\].regime: unknown regime 'nl2021'; did you mean nl-2021\?"),
        ('\n[jurisdictions.NL]\nregimes = [{ from = 2021-07-01, regime = "x", relationship_organisations = ["ngo"] }]',
         r"relationship_organisations: 'ngo' is not one of commercial \| charity \| lottery \| publisher"),
        ("\n[jurisdictions.NL.holidays]\nexclude = 3", r"holidays.exclude: must be an array of dates, not an integer"),
        ("\n[jurisdictions.NL.holidays]\nextra = { 2026-08-03 = 3 }", r"2026-08-03: must be a string, not an int"),
        ('\n[jurisdictions.nl]\n[jurisdictions.NL]', r"jurisdictions.NL: configured twice \(as nl and NL\)"),
        # addresses, URLs, files
        ('\n[fastagi]\nlisten = "127.0.0.1:²"', r"fastagi.listen: '127.0.0.1:²' is not an address like 127.0.0.1:4573"),
        ('\n[fastagi]\nlisten = "[::1"', r"fastagi.listen: '\[::1' is not an address like"),
        ('\n[http]\nlisten = "::1:8080"', r"http.listen: '::1:8080' is not an address like .*\(IPv6: \[::1\]:4573\)"),
        ('\n[fastagi]\nlisten = "127.0.0.1:70000"', r"fastagi.listen: '127.0.0.1:70000' is not an address"),
        ("\n[fastagi]\nmax_sessions = true", r"fastagi.max_sessions: must be an integer, not a boolean"),
        ('\n[fastagi]\nbudget_ms = "50"', r"fastagi.budget_ms: must be a number, not a string"),
        ("\n[fastagi]\nbudget_ms = nan", r"fastagi.budget_ms: must be between 0 and 10000"),
        ("\n[http]\ntokens = [3]", r"http.tokens\[0\]: must be a table, not an integer"),
        ("\n[http]\ntokens = {}", r"http.tokens: must be an array of tables, not a table"),
        ('\n[[http.tokens]]\nname = "a"\nrole = "admin"\nsha256 = "9f86d081"', r"tokens\[0\].sha256: must be the SHA"),
        ('\n[log]\ndsn = "postgresql://[::1/db"', r"log.dsn: 'postgresql://\[::1/db' is not a valid URL"),
        ('\n[log]\ndsn = "postgresql://u:secret@h:port/db"', r"dsn: 'postgresql://u:\*\*\*@h:port/db' is not a"),
        ('\n[log]\ndsn = "sqlite://host/x.db"', r"log.dsn: 'sqlite://host/x.db': a SQLite DSN names a local file"),
        ('\n[log]\ndsn = "sqlite:///"', r"log.dsn: 'sqlite:///': no file name"),
        ('\n[log]\ndsn = "mysql://h/db"', r"log.dsn: 'mysql://h/db': use sqlite:///PATH or postgresql://"),
        ('\n[log]\nspool_dir = "a\\u0000b"', r"log.spool_dir: not a directory name"),
        ('\n[ari]\nurl = "http://[::1"\nusername = "u"\npassword = "p"', r"ari.url: 'http://\[::1' is not a valid URL"),
        ('\n[ari]\nusername = "u"\npassword = "p"\ndefault_campaign = "acme-sale"',
         r"ari.default_campaign: no campaign 'acme-sale' is configured; did you mean acme-sales\?"),
        ('\n[numbers]\ntrunk_prefix = "²"', r"numbers.trunk_prefix: must be digits"),
        ('\n[numbers]\nemergency = ["١١٢"]', r"numbers.emergency: '١١٢' is not a string of digits"),
        # campaigns
        ('tenant = 3', r"campaigns.acme-sales.tenant: must be a string, not an integer"),
        ('\n[campaigns.x]\ntenant = "t"\ncaller_ids = "+31201234567"', r"x.caller_ids: must be an array of str"),
    ],
)  # fmt: skip
def test_bad_values_get_a_clear_message(tmp_path: Path, addition: str, message: str) -> None:
    text = BASE.replace('tenant = "acme"\n', "") + addition if addition.startswith("tenant") else BASE + addition
    with pytest.raises(ConfigError, match=message) as raised:
        load(write(tmp_path, text + "\n"), env={})
    assert "Traceback" not in str(raised.value) and "isoformat" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://[::1", r"index.redis_url: redis://\[::1: not a valid URL"),
        ("redis://:secret@h:abc/0", r"index.redis_url: redis://:\*\*\*@h:abc/0: Port could not be cast"),
        ("redis://h:99999", r"index.redis_url: redis://h:99999: Port out of range"),
        ("redis://h/zero", r"index.redis_url: redis://h/zero: database 'zero' is not a number"),
        ("unix:///run/redis.sock?db=x", r"index.redis_url: unix:///run/redis.sock\?db=x: Invalid value for 'db'"),
    ],
)
def test_bad_redis_urls_are_named_without_their_password(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        load(write(tmp_path, BASE.replace("redis://127.0.0.1:6379/0", url)), env={})
    assert "secret" not in str(raised.value)
    env_message = message.replace("index.redis_url: ", "index.redis_url: ") + r".*\(from \$GATEKEEPER_REDIS_URL\)"
    with pytest.raises(ConfigError, match=env_message):
        load(write(tmp_path, BASE), env={"GATEKEEPER_REDIS_URL": url})


def test_an_unreadable_pepper_file_is_a_configuration_error(tmp_path: Path) -> None:
    binary = tmp_path / "pepper.bin"
    binary.write_bytes(b"\xff\xfe" + bytes(range(32)))
    for pepper_file, message in [
        (str(binary), r"index.pepper_file: .*pepper.bin is not UTF-8 text"),
        (str(tmp_path / "absent"), r"index.pepper_file: cannot read .*absent: No such file"),
        ("a\\u0000b", r"index.pepper_file: 'a\\x00b' is not a file name"),
    ]:
        text = BASE.replace(f'pepper = "{PEPPER}"', f'pepper_file = "{pepper_file}"')
        with pytest.raises(ConfigError, match=message):
            load(write(tmp_path, text), env={})


def test_holiday_exclusions_may_be_toml_dates(tmp_path: Path) -> None:
    text = BASE + '\n[jurisdictions.NL.holidays]\nexclude = [2026-05-05, "2026-12-25"]\n'
    holidays = load(write(tmp_path, text), env={}).campaigns["acme-sales"].jurisdiction.hours.holidays
    assert holidays.holiday(dt.date(2026, 5, 5)) is None and holidays.holiday(dt.date(2026, 12, 25)) is None
    assert holidays.holiday(dt.date(2026, 12, 26)) is not None


# Every key of a complete configuration, each given values of every TOML type (and plausible mistakes): the
# parser answers with settings or a ConfigError, never with another exception (a raw Python error).
COMPLETE: dict[str, Any] = {
    "index": {"redis_url": "redis://127.0.0.1:6379/0", "pepper": PEPPER, "prefix": "gk", "timeout_ms": 50,
              "max_connections": 32},
    "numbers": {"default_region": "NL", "trunk_prefix": "9", "emergency": ["112"]},
    "campaigns": {"acme-sales": {"tenant": "acme", "purpose": "telemarketing", "organisation": "commercial",
                                 "jurisdiction": "NL", "region": "NL", "mode": "enforce",
                                 "caller_ids": ["+31201234567"]}},
    "jurisdictions": {"NL": {
        "timezone": "Europe/Amsterdam", "former_customer_years": 3,
        "regimes": [{"from": dt.date(2021, 7, 1), "regime": "nl-2021"},
                    {"from": dt.date(2026, 7, 1), "regime": "nl-2026", "relationship_organisations": ["charity"]}],
        "hours": {"weekdays": "09:00-22:00", "saturday": "10:00-16:00", "sunday": "closed",
                  "short_days": ["12-05"], "short_close": "18:30"},
        "holidays": {"exclude": ["2026-05-05"], "extra": {"2027-06-01": "Company day"}},
    }},
    "fastagi": {"listen": "127.0.0.1:4573", "allow_from": ["127.0.0.1/32"], "budget_ms": 50, "env_timeout_ms": 2000,
                "reply_timeout_ms": 2000, "max_sessions": 1000, "max_active": 32, "max_line_bytes": 2048,
                "max_env_lines": 128},
    "http": {"listen": "127.0.0.1:8080", "session_secret": "s" * 20,
             "tokens": [{"name": "desk", "role": "compliance", "sha256": "ab" * 32}]},
    "ari": {"url": "http://127.0.0.1:8088", "username": "gk", "password": "pw", "app": "gatekeeper",
            "hangup_blocked": False, "default_campaign": "acme-sales"},
    "log": {"dsn": "sqlite:///decisions.db", "instance": "gk1", "retention_days": 400, "spool_dir": "/var/lib/gk",
            "ship_in_serve": True},
}  # fmt: skip


def _with(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """COMPLETE with the value at `path` replaced."""
    data = copy.deepcopy(COMPLETE)
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    paths: list[tuple[str | int, ...]] = [prefix] if prefix else []
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        paths += _paths(child, (*prefix, key))
    return paths


PLAUSIBLE = [
    "", " ", "closed", "9-22", "09:00-22:00", "24:00-25:00", "09:00-", "[::1", "[::1]:80", "::1:80", "redis://[::1",
    "redis://h:x", "sqlite:///", "postgresql://[x", "http://[::1", "Europe", "../..", "NL", "nl-2021", "12-05",
    "02-29", "18:30", "x" * 300, "\x00", "²", "१२", "2026-02-30", "+31201234567",
]  # fmt: skip
SCALARS = st.one_of(
    st.sampled_from(PLAUSIBLE), st.text(max_size=20), st.integers(), st.floats(), st.booleans(),
    st.dates(), st.datetimes(), st.times(),
)  # fmt: skip
TOML_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(_paths(COMPLETE)), value=TOML_VALUES)
def test_any_value_anywhere_is_accepted_or_a_config_error(path: tuple[str | int, ...], value: Any) -> None:
    with contextlib.suppress(ConfigError):
        parse(_with(path, value), "fuzz.toml", {})


EVERY_TYPE: list[Any] = [*PLAUSIBLE, 0, -1, 2**70, 1.5, float("nan"), float("inf"), True, dt.date(2026, 1, 1),
                         dt.datetime(2026, 1, 1, 9, 0), dt.time(9, 0), [], ["x"], [1], [{}], {}, {"x": 1}]  # fmt: skip


def test_every_key_with_every_kind_of_value_is_accepted_or_a_config_error() -> None:
    raw = []
    for path in _paths(COMPLETE):
        for value in EVERY_TYPE:
            try:
                parse(_with(path, value), "table.toml", {})
            except ConfigError:
                pass
            except Exception as exc:
                raw.append(f"{'.'.join(map(str, path))} = {value!r}: {type(exc).__name__}: {exc}")
    assert raw == []


def test_the_complete_configuration_is_valid() -> None:
    assert parse(COMPLETE, "complete.toml", {}).ari is not None


def test_the_readme_configuration_snippets_pasted_together_are_valid_and_load() -> None:
    blocks = toml_blocks()
    assert len(blocks) == 4 and "[http]" in blocks[1] and blocks[2].startswith("[import.columns]")
    assert "[[http.tokens]]" in blocks[3]
    data = tomllib.loads("\n".join(blocks))  # each snippet pasted after the ones above it
    assert data["http"]["listen"] == "127.0.0.1:8080" and data["http"]["session_secret"] == "…"
    assert data["http"]["tokens"] == [{"name": "compliance-desk", "role": "compliance", "sha256": "…"}]
    settings = parse(fill_placeholders(data), "README.md", {})  # and every key in them is one gatekeeper knows
    assert [(t.name, t.role) for t in settings.http.tokens] == [("compliance-desk", "compliance")]
    assert settings.index.max_connections == 32 and settings.ari is not None
    assert dict(settings.imports.columns)["telefoonnummer"] == "number"


def test_import_columns_map_a_crm_export() -> None:
    data = {"index": {"pepper": PEPPER}, "import": {"columns": {"Telefoonnummer": "number", "klant": "Tenant"}}}
    assert parse(data, "inline", {}).imports.columns == (("telefoonnummer", "number"), ("klant", "tenant"))
    assert parse({"index": {"pepper": PEPPER}}, "inline", {}).imports.columns == ()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"columns": {"telefoonnummer": "nummer"}},
         "inline: import.columns: telefoonnummer=nummer: 'nummer' is not a field; the fields are tenant, number, kind, "
         "start, end, reference"),
        ({"columns": {"a": "number", "b": "number"}}, "inline: import.columns: columns 'a' and 'b' both map to number"),
        ({"columns": {"a": 1}}, "inline: import.columns.a: must be a str"),
        ({"colums": {}}, "inline: import.colums: unknown key"),
    ],
)  # fmt: skip
def test_import_column_errors_name_the_key(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse({"index": {"pepper": PEPPER}, "import": section}, "inline", {})
    assert str(caught.value).startswith(message)
