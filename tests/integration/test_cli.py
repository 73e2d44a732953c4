"""The public command line, end to end against a real redis-server."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import re
import secrets
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.cli import main
from gatekeeper.config import load, parse
from gatekeeper.devservers import PrivateRedis
from gatekeeper.index.store import ConsentIndex
from gatekeeper.web.auth import Principal, Role, TokenBook
from tests.conftest import PEPPER, write_csv
from tests.readme import fill_placeholders, table_boundaries, toml_blocks

pytestmark = pytest.mark.integration


@pytest.fixture
def config(tmp_path: Path, redis_server: PrivateRedis) -> Path:
    path = tmp_path / "gatekeeper.toml"
    path.write_text(
        f"""
[index]
redis_url = "{redis_server.url}"
pepper = "{PEPPER}"
prefix = "cli{secrets.token_hex(3)}"

[campaigns.acme-sales]
tenant = "acme"
caller_ids = ["+31201234567"]

[campaigns.acme-shadow]
tenant = "acme"
mode = "monitor"
"""
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def check_json(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(capsys, "--config", str(config), "check", *args, "--json")
    return code, json.loads(out)


@pytest.fixture
def loaded(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    data = write_csv(
        tmp_path / "consents.csv",
        [
            "acme,0612345678,consent,2025-01-01,,form-1",
            "acme,0612345679,customer,2019-01-01,,contract-9",
            "acme,0612345680,consent,2024-01-01,,form-2",
            "acme,0612345680,objection,2025-01-01,,call",
        ],
    )
    code, out, _ = run(capsys, "--config", str(config), "import", str(data), "--replace")
    assert code == 0, out
    assert "imported 4 of 4 rows" in out and "tenant acme: new generation" in out
    return config


def test_check_allow_and_block_with_exit_status(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, result = check_json(capsys, loaded, "0612345678", "--campaign", "acme-sales", "--at", "2026-12-01T10:30")
    assert code == 0
    assert {k: result[k] for k in ("verdict", "reason", "would_block", "regime")} == {
        "verdict": "allow",
        "reason": "consent",
        "would_block": False,
        "regime": "nl-2026",
    }
    assert result["basis_reference"] == "form-1" and "consent given 2025-01-01" in result["explanation"]
    assert result["number_masked"] == "+31 6 ****5678" and "0612345678" not in json.dumps(result)
    code, result = check_json(capsys, loaded, "0612345680", "--campaign", "acme-sales", "--at", "2026-12-01T10:30")
    assert (code, result["verdict"], result["reason"]) == (1, "block", "objection")


def test_at_without_offset_is_campaign_local_time(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 21:59 local is allowed; 21:59Z is 22:59 in Amsterdam in winter: outside hours.
    assert check_json(capsys, loaded, "0612345678", "--campaign", "acme-sales", "--at", "2026-12-01T21:59")[0] == 0
    code, result = check_json(capsys, loaded, "0612345678", "--campaign", "acme-sales", "--at", "2026-12-01T21:59Z")
    assert (code, result["reason"]) == (1, "outside-hours")


def test_regime_switch_from_the_command_line(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, before = check_json(capsys, loaded, "0612345679", "--campaign", "acme-sales", "--at", "2026-06-30T10:00")
    assert (code, before["reason"], before["regime"]) == (0, "customer", "nl-2021")
    code, after = check_json(capsys, loaded, "0612345679", "--campaign", "acme-sales", "--at", "2026-07-01T10:00")
    assert (code, after["reason"], after["regime"]) == (1, "no-basis", "nl-2026")


def test_unknown_campaign_and_invalid_number_are_decisions(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, result = check_json(capsys, loaded, "0612345678", "--campaign", "nope")
    assert (code, result["verdict"], result["reason"]) == (1, "block", "unknown-campaign")
    code, result = check_json(capsys, loaded, "06-CALL-ME", "--campaign", "acme-sales")
    assert (code, result["reason"]) == (1, "invalid-number")


def test_caller_id_and_monitor_mode(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--campaign", "acme-sales", "--at", "2026-12-01T10:30")
    assert check_json(capsys, loaded, "0612345678", *args, "--caller-id", "+31201234567")[0] == 0
    code, result = check_json(capsys, loaded, "0612345678", *args, "--caller-id", "+31209999999")
    assert (code, result["reason"]) == (1, "caller-id")
    code, result = check_json(capsys, loaded, "0612345690", "--campaign", "acme-shadow", "--at", "2026-12-01T10:30")
    assert (code, result["verdict"], result["would_block"], result["reason"]) == (0, "allow", True, "no-basis")


def test_human_output(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--config", str(loaded), "check", "0612345680", "--campaign", "acme-sales",
                       "--at", "2026-12-01T10:30")  # fmt: skip
    assert code == 1
    assert out.startswith("BLOCK objection  [+31 6 ****5680, campaign acme-sales, regime nl-2026]")


def test_human_output_shows_every_time_in_the_campaigns_zone(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a consent given at 23:32:32 UTC on 30 November: 00:32:32 on 1 December in Amsterdam
    data = write_csv(tmp_path / "timed.csv", ["acme,0612345678,consent,2026-11-30T23:32:32Z,,form-7"])
    assert run(capsys, "--config", str(config), "import", str(data), "--replace")[0] == 0
    for at in ("2026-12-01T10:30", "2026-12-01T09:30Z", "2026-12-01T10:30+01:00"):  # one instant, three spellings
        code, out, _ = run(capsys, "--config", str(config), "check", "0612345678", "--campaign", "acme-sales",
                           "--at", at)  # fmt: skip
        assert code == 0
        lines = out.splitlines()
        assert lines[1] == "  call time 2026-12-01 10:30:00 CET (+01:00)", at
        assert lines[2].startswith(
            "  Allowed under nl-2026: consent given 2026-12-01 00:32:32 CET (+01:00) (ref form-7); "
            "Tuesday 2026-12-01 10:30 CET (+01:00) is within the calling hours"
        ), at
        assert "+00:00" not in out
    code, out, _ = run(capsys, "--config", str(config), "check", "0612345678", "--campaign", "nope",
                       "--at", "2026-12-01T10:30Z")  # fmt: skip
    assert code == 1 and "  call time 2026-12-01 10:30:00 UTC (+00:00)" in out  # no campaign, no zone: UTC


def test_usage_and_configuration_errors_exit_2(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--config", str(config), "check", "0612345678", "--campaign", "acme-sales", "--at", "x")
    assert code == 2 and "--at" in err
    code, _, err = run(capsys, "--config", str(tmp_path / "missing.toml"), "check", "1", "--campaign", "x")
    assert code == 2 and "no such file" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('[index]\npepper = "0123456789abcdef"\n[campaigns.x]\ntenant = "t"\nmode = "loud"\n')
    code, _, err = run(capsys, "--config", str(bad), "check", "1", "--campaign", "x")
    assert code == 2 and "bad.toml: campaigns.x.mode: must be one of enforce | monitor" in err
    with pytest.raises(SystemExit) as exc:
        main(["check", "0612345678"])  # --campaign missing
    assert exc.value.code == 2
    code, _, err = run(capsys, "--config", str(config), "import", str(tmp_path / "none.csv"))
    assert code == 2 and "no such file" in err
    code, _, err = run(capsys, "--config", str(config), "object", "12", "--tenant", "acme")
    assert code == 2 and "not a valid telephone number" in err


def test_import_reports_bad_rows_and_strict_refuses(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        "acme,0612345678,consent,2025-01-01,,ok",
        "acme,notanumber,consent,2025-01-01,,",
        "acme,0612345679,sometimes,2025-01-01,,",
    ]
    data = write_csv(tmp_path / "mixed.csv", rows)
    code, _, err = run(capsys, "--config", str(config), "import", str(data), "--strict")
    assert code == 1 and "refused: 2 invalid rows" in err and "line 3: number" in err and "line 4: kind" in err
    code, _, _ = run(capsys, "--config", str(config), "check", "0612345678", "--campaign", "acme-sales",
                     "--at", "2026-12-01T10:30")  # fmt: skip
    assert code == 1, "strict import must not have written anything"
    code, _, err = run(capsys, "--config", str(config), "import", str(data))
    assert code == 1 and "imported 1 of 3 rows" in err and "2 invalid rows skipped" in err
    assert check_json(capsys, config, "0612345678", "--campaign", "acme-sales", "--at", "2026-12-01T10:30")[0] == 0


def test_import_jsonl(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "c.jsonl"
    data.write_text(json.dumps({"tenant": "acme", "number": "+31612345678", "kind": "consent",
                                "start": "2025-01-01T09:00:00+01:00", "reference": "app"}) + "\n")  # fmt: skip
    assert run(capsys, "--config", str(config), "import", str(data))[0] == 0
    _, result = check_json(capsys, config, "0612345678", "--campaign", "acme-sales", "--at", "2026-12-01T10:30")
    assert result["basis_reference"] == "app"


def test_scrub(loaded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "list.csv"
    source.write_text("name,phone\nAnna,0612345678\nBram,0612345680\nCees,0612345681\nDirk,not-a-number\n")
    out = tmp_path / "out.csv"
    code, stdout, _ = run(capsys, "--config", str(loaded), "scrub", str(source), "-o", str(out),
                          "--campaign", "acme-sales", "--at", "2026-12-01T10:30")  # fmt: skip
    assert code == 0 and "scrubbed 4 rows" in stdout
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["name"], r["verdict"], r["reason"]) for r in rows] == [
        ("Anna", "allow", "consent"),
        ("Bram", "block", "objection"),
        ("Cees", "block", "no-basis"),
        ("Dirk", "block", "invalid-number"),
    ]
    assert all(r["explanation"] and r["regime"] == "nl-2026" for r in rows)


def test_object_and_erase(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--campaign", "acme-sales", "--at", "2099-12-01T10:30")
    assert check_json(capsys, loaded, "0612345678", *args)[0] == 0
    code, out, _ = run(capsys, "--config", str(loaded), "object", "06 1234 5678", "--tenant", "acme")
    assert code == 0 and "+31 6 ****5678" in out and "0612345678" not in out
    assert check_json(capsys, loaded, "0612345678", *args)[1]["reason"] == "objection"
    code, out, _ = run(capsys, "--config", str(loaded), "erase", "0612345679")
    assert code == 0 and "1 records removed" in out
    assert check_json(capsys, loaded, "0612345679", *args)[1]["reason"] == "suppressed"
    code, out, _ = run(capsys, "--config", str(loaded), "status")
    assert code == 0 and "acme: generation" in out


def test_dead_redis_fails_closed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with PrivateRedis() as server:
        url = server.url
    path = tmp_path / "dead.toml"
    path.write_text(f'[index]\nredis_url = "{url}"\npepper = "{PEPPER}"\n[campaigns.c]\ntenant = "t"\n')
    code, result = check_json(capsys, path, "0612345678", "--campaign", "c")
    assert (code, result["verdict"], result["reason"]) == (1, "block", "index-unavailable")
    code, _, err = run(capsys, "--config", str(path), "object", "0612345678", "--tenant", "t")
    assert code == 3 and "unavailable" in err


def scrub(capsys: pytest.CaptureFixture[str], config: Path, source: Path, out: Path) -> tuple[int, str, str]:
    return run(capsys, "--config", str(config), "scrub", str(source), "-o", str(out), "--campaign", "acme-sales",
               "--at", "2026-12-01T10:30")  # fmt: skip


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_scrub_keeps_a_semicolon_or_tab_separated_list_as_it_is(
    loaded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], delimiter: str
) -> None:
    source, out = tmp_path / "crm.csv", tmp_path / "out.csv"
    rows = [["naam", "plaats", "telefoonnummer"], ["Anna", "Utrecht, centrum", "06 1234 5678"],
            ["Bram", "Delft", "0612345680"], ["Dirk", "Breda", "not-a-number"]]  # fmt: skip
    source.write_text("".join(delimiter.join(r) + "\n" for r in rows).replace("Utrecht, centrum", '"Utrecht, c"'))
    code, stdout, _ = scrub(capsys, loaded, source, out)
    assert code == 0 and "scrubbed 3 rows" in stdout
    lines = out.read_text().splitlines()
    assert lines[0] == delimiter.join(["naam", "plaats", "telefoonnummer", "verdict", "reason", "would_block",
                                       "regime", "explanation"])  # fmt: skip
    with out.open(newline="") as f:
        written = list(csv.reader(f, delimiter=delimiter))
    assert all(len(row) == 8 for row in written), "every row has the input's columns and the five added ones"
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in written[1:]] == [
        ("Anna", "Utrecht, c", "06 1234 5678", "allow", "consent"),
        ("Bram", "Delft", "0612345680", "block", "objection"),
        ("Dirk", "Breda", "not-a-number", "block", "invalid-number"),
    ]


def test_scrub_keeps_the_quoting_line_ends_and_byte_order_mark(
    loaded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, out = tmp_path / "export.csv", tmp_path / "out.csv"
    source.write_bytes('\ufeff"Name";"Phone";"Note; or two"\r\n"Anna";"0612345678";""\r\n'.encode())
    assert scrub(capsys, loaded, source, out)[0] == 0
    data = out.read_bytes()
    assert data.startswith(
        b'\xef\xbb\xbf"Name";"Phone";"Note; or two";"verdict";"reason";"would_block";"regime";"explanation"\r\n'
    )
    assert data.count(b"\r\n") == 2 and data.count(b"\n") == 2
    assert data.split(b"\r\n")[1].startswith(b'"Anna";"0612345678";"";"allow";"consent";"false";"nl-2026";"')
    plain = tmp_path / "plain.csv"
    plain.write_text("name,phone\nAnna,0612345678\n")
    assert scrub(capsys, loaded, plain, out)[0] == 0
    assert out.read_bytes().startswith(b"name,phone,verdict,reason,would_block,regime,explanation\nAnna,0612345678,")


def test_scrub_refuses_a_list_without_a_column_of_numbers(
    loaded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, out = tmp_path / "list.csv", tmp_path / "out.csv"
    out.write_text("an earlier scrub\n")
    source.write_text("name,city,tel.\nAnna,Utrecht,0612345678\nBram,Delft,0612345680\n")
    code, _, err = scrub(capsys, loaded, source, out)
    assert code == 2
    assert f"{source}: no column of telephone numbers: the header has 'name', 'city', 'tel.'" in err
    assert (
        "rename the number column to number (or phone, telephone," in err
        and "(column 'tel.' looks like telephone numbers)" in err
    )
    assert out.read_text() == "an earlier scrub\n", "a refused scrub leaves an existing output alone"
    source.write_text("0612345678\n0612345679\n")
    code, _, err = scrub(capsys, loaded, source, out)
    assert code == 2 and "line 1 is a telephone number, not a header" in err
    source.write_text("contact;notes\n06 1234 5678;call after 5\n+31612345680;\n")  # unnamed, but numbers: used
    assert scrub(capsys, loaded, source, out)[0] == 0
    with out.open(newline="") as f:
        assert [(r["contact"], r["reason"]) for r in csv.DictReader(f, delimiter=";")] == [
            ("06 1234 5678", "consent"),
            ("+31612345680", "objection"),
        ]


def test_scrub_refuses_a_file_that_is_not_utf8_text(
    loaded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, out = tmp_path / "latin1.csv", tmp_path / "out.csv"
    source.write_bytes("naam;telefoon\nJosé;0612345678\n".encode("latin-1"))
    code, _, err = scrub(capsys, loaded, source, out)
    assert code == 2 and f"{source}: not UTF-8 text" in err and "Traceback" not in err
    assert not out.exists()


async def objections(config: Path, tenant: str, e164: str) -> int:
    index = ConsentIndex.from_settings(load(config).index)
    try:
        return len((await index.lookup(tenant, e164)).facts.objections)
    finally:
        await index.close()


def test_object_refuses_a_tenant_that_no_campaign_names(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--config", str(loaded), "object", "0612345678", "--tenant", "acmee")
    assert code == 2 and out == ""
    assert "--tenant: no campaign names tenant 'acmee'; did you mean acme? (known tenants: acme)" in err
    assert "--new-tenant" in err
    assert asyncio.run(objections(loaded, "acmee", "+31612345678")) == 0, "nothing was registered"
    code, out, _ = run(capsys, "--config", str(loaded), "object", "0612345678", "--tenant", "acmee", "--new-tenant")
    assert code == 0 and "tenant acmee" in out
    assert asyncio.run(objections(loaded, "acmee", "+31612345678")) == 1
    code, _, err = run(capsys, "--config", str(loaded), "object", "0612345678", "--tenant", "a b", "--new-tenant")
    assert code == 2 and "--tenant: 'a b' is not a tenant name" in err


def test_object_without_any_configured_tenant(tmp_path: Path, redis_server: PrivateRedis,
                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    path = tmp_path / "bare.toml"
    path.write_text(f'[index]\nredis_url = "{redis_server.url}"\npepper = "{PEPPER}"\nprefix = "bare"\n')
    code, _, err = run(capsys, "--config", str(path), "object", "0612345678", "--tenant", "acme")
    assert code == 2 and "no campaign names tenant 'acme' (no campaign is configured)" in err


def test_token_create_shows_the_secret_once_and_prints_the_entry_that_accepts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no configuration anywhere: none is needed
    monkeypatch.delenv("GATEKEEPER_CONFIG", raising=False)
    code, out, err = run(capsys, "token", "create", "--role", "compliance", "--name", "desk")
    assert code == 0
    found = re.search(r"\n\n    (\S+)\n\n", err)
    assert found is not None and "not shown again" in err
    token = found[1]
    assert len(token) >= 40 and token not in out, "the secret goes to the terminal, never into the lines to keep"
    entry = tomllib.loads(out)["http"]["tokens"]
    assert entry == [{"name": "desk", "role": "compliance", "sha256": hashlib.sha256(token.encode()).hexdigest()}]
    readme = "\n".join(toml_blocks())
    for offset in table_boundaries(readme):  # wherever it is pasted in the README's example
        pasted = readme[:offset] + out + readme[offset:]
        settings = parse(fill_placeholders(tomllib.loads(pasted)), "pasted.toml", {})
        principal = TokenBook(settings.http.tokens).authenticate(token)
        assert principal == Principal("desk", Role.COMPLIANCE), pasted
    code, out, err = run(capsys, "token", "create", "--role", "viewer")
    assert code == 0 and re.fullmatch(r"viewer-[0-9a-f]{6}", tomllib.loads(out)["http"]["tokens"][0]["name"])
    assert run(capsys, "token", "create", "--role", "viewer", "--name", "a b")[:2] == (2, "")
    with pytest.raises(SystemExit) as exc:
        main(["token", "create", "--role", "root"])
    assert exc.value.code == 2


def test_import_maps_the_columns_of_a_crm_export(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "crm.csv"
    export.write_text("Klant;Telefoonnummer;Soort;Begin;Kenmerk\nacme;0612345678;consent;2025-01-01;crm-7\n")
    code, _, err = run(capsys, "--config", str(config), "import", str(export))
    assert code == 2 and "the header lacks tenant, number, kind" in err and "--map telefoonnummer=number" in err
    code, _, err = run(capsys, "--config", str(config), "import", str(export), "--map", "telefoonnummer=nummer")
    assert code == 2 and "'nummer' is not a field; the fields are tenant, number, kind" in err
    code, _, err = run(capsys, "--config", str(config), "import", str(export), "--map", "telefoon=number,klant=tenant")
    assert code == 2 and "--map telefoon=number: the file has no column 'telefoon'" in err
    mapping = "telefoonnummer=number,klant=tenant,soort=kind,begin=start,kenmerk=reference"
    code, out, _ = run(capsys, "--config", str(config), "import", str(export), "--map", mapping)
    assert code == 0 and "imported 1 of 1 rows" in out
    _, result = check_json(capsys, config, "0612345678", "--campaign", "acme-sales", "--at", "2026-12-01T10:30")
    assert result["basis_reference"] == "crm-7"
    # The same mapping in the configuration; --map still overrides one column of it.
    config.write_text(config.read_text() + '\n[import.columns]\ntelefoonnummer = "number"\nklant = "tenant"\n'
                      'soort = "kind"\nbegin = "start"\nkenmerk = "reference"\n')  # fmt: skip
    export.write_text("Klant;Mobiel;Soort;Begin;Kenmerk\nacme;0612345679;consent;2025-01-01;crm-8\n")
    code, out, _ = run(capsys, "--config", str(config), "import", str(export), "--map", "mobiel=number")
    assert code == 0 and "imported 1 of 1 rows" in out
    _, result = check_json(capsys, config, "0612345679", "--campaign", "acme-sales", "--at", "2026-12-01T10:30")
    assert result["basis_reference"] == "crm-8"


def test_import_warns_about_duplicate_rows_and_facts_dated_later(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = ["acme,0612345678,consent,2025-01-01,,form-1", "acme,0612345678,consent,2025-01-01,,form-1",
            "acme,0612345679,consent,2099-01-01,,later", "acme,+31612345678,consent,2025-01-01,,form-1"]  # fmt: skip
    code, out, err = run(capsys, "--config", str(config), "import", str(write_csv(tmp_path / "d.csv", rows)))
    assert code == 0 and out == ""  # imported, with warnings (on stderr)
    assert "imported 4 of 4 rows" in err and "(4 rows, 2 new records)" in err
    assert ("warning: 2 rows repeat the fact of an earlier row (stored once):\n  line 3: the same fact as line 2\n"
            "  line 5: the same fact as line 2\n") in err  # fmt: skip
    assert ("warning: 1 row starts after the import (the fact counts only from then):\n"
            "  line 4: start 2099-01-01 is later than the import") in err  # fmt: skip


def test_status_counts_what_is_left_after_an_erasure(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--config", str(loaded), "status")
    assert code == 0 and "acme: generation" in out and "(3 records," in out
    assert run(capsys, "--config", str(loaded), "erase", "0612345679")[0] == 0
    code, out, _ = run(capsys, "--config", str(loaded), "status")
    assert code == 0 and "(2 records," in out
    loaded.write_text(loaded.read_text() + '\n[campaigns.donors]\ntenant = "goededoel"\n')
    code, out, _ = run(capsys, "--config", str(loaded), "status")
    assert code == 0 and "goededoel: no data loaded; campaigns donors" in out
