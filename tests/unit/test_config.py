from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from gatekeeper.config import ConfigError, load, parse, redact_url
from gatekeeper.core.model import Mode, Organisation, Purpose

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
        (lambda t: t.replace("[index]", "[index]\ntimeout_ms = \"fast\""), r"index.timeout_ms: must be a float"),
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
