"""The public command line, end to end against a real redis-server."""

from __future__ import annotations

import csv
import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.cli import main
from gatekeeper.devservers import PrivateRedis
from tests.conftest import PEPPER, write_csv

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
    assert result["number"] == "+31 6 ****5678" and "0612345678" not in json.dumps(result)
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
