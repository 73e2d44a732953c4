"""`gatekeeper-agi`: the classic AGI script, driven over stdin/stdout as Asterisk does."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.agi import run
from gatekeeper.config import load
from gatekeeper.core.model import Reason
from gatekeeper.devservers import PrivateRedis
from gatekeeper.index.loader import Loader
from gatekeeper.index.store import ConsentIndex, connect
from gatekeeper.record import DecisionRecord
from tests.conftest import PEPPER, pinned, write_csv

pytestmark = pytest.mark.integration


def env_block(extension: str = "0612345678", accountcode: str = "") -> bytes:
    lines = [
        "agi_request: gatekeeper-agi",
        "agi_channel: Local/0612345678@outbound-00000022;2",
        "agi_language: en",
        "agi_type: Local",
        "agi_uniqueid: 1795860072.69",
        "agi_version: 23.4.1",
        "agi_callerid: +31201234567",
        "agi_calleridname: Acme Sales",
        "agi_callingpres: 0",
        "agi_context: outbound",
        f"agi_extension: {extension}",
        "agi_priority: 1",
        f"agi_accountcode: {accountcode}",
        "agi_arg_1: campaign=acme-sales",
    ]
    return ("\n".join(lines) + "\n\n").encode()


@pytest.fixture
async def config(tmp_path: Path, redis_server: PrivateRedis) -> Path:
    path = tmp_path / "gk.toml"
    path.write_text(
        f'[index]\nredis_url = "{redis_server.url}"\npepper = "{PEPPER}"\nprefix = "agi{os.getpid()}"\n'
        '[campaigns.acme-sales]\ntenant = "acme"\ncaller_ids = ["+31201234567"]\n'
    )
    index = ConsentIndex.from_settings(load(path, env={}).index)
    rows = ["acme,0612345678,consent,2020-01-01,,form-1", "acme,0612345680,objection,2020-01-01,,call"]
    await Loader(index).load(write_csv(tmp_path / "d.csv", rows), region="NL", replace=True)
    await index.close()
    return path


def run_agi(config: Path, args: list[str], stdin: bytes, replies: list[bytes]) -> tuple[int, list[bytes], bytes]:
    """Run the script; answer each command line with the next reply, as Asterisk would."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper.agi", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "GATEKEEPER_CONFIG": str(config)},
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(stdin)
    proc.stdin.flush()
    commands = []
    for reply in replies:
        line = proc.stdout.readline()
        if not line:
            break
        commands.append(line)
        proc.stdin.write(reply)
        proc.stdin.flush()
    proc.stdin.close()
    code = proc.wait(30)
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    return code, commands, err


def test_allowed_call(config: Path) -> None:
    # In this process, to pin the call time (a Tuesday morning); the other tests run the script as Asterisk does.
    stdin, stdout = io.StringIO(env_block().decode() + "200 result=0\n"), io.StringIO()
    code = run(["campaign=acme-sales"], stdin, stdout, {"GATEKEEPER_CONFIG": str(config)}, clock=pinned())
    assert code == 0
    assert stdout.getvalue().startswith('EXEC MSet "GATEKEEPER_RESULT=ALLOW,GATEKEEPER_REASON=consent,')


async def test_the_decision_is_recorded_before_the_verdict_is_set(config: Path) -> None:
    # The objection blocks at any hour: no pinned clock is needed for this subprocess.
    code, commands, err = run_agi(config, ["campaign=acme-sales"], env_block("0612345680"), [b"200 result=0\n"])
    assert code == 0, err
    decision_id = commands[0].rstrip(b'"\n').rpartition(b"=")[2].decode()
    settings = load(config, env={})
    client = connect(settings.index)
    try:
        entries: Any = await client.xrange(f"{settings.index.prefix}:outbox:{settings.log.instance_name}")
    finally:
        await client.aclose()
    records = [DecisionRecord.loads(fields[b"r"]) for _, fields in entries]
    (record,) = [r for r in records if r.decision_id == decision_id]
    assert (record.source, record.reason, record.uniqueid) == ("agi", Reason.OBJECTION, "1795860072.69")
    assert record.number_masked == "+31 6 ****5680"
    assert b"612345680" not in err


def test_blocked_call_and_campaign_from_the_channel_variable(config: Path) -> None:
    code, commands, _ = run_agi(
        config, [], env_block("0612345680"), [b"200 result=1 (acme-sales)\n", b"200 result=0\n"]
    )
    assert code == 0
    assert commands[0] == b"GET VARIABLE GATEKEEPER_CAMPAIGN\n"
    assert commands[1].startswith(b'EXEC MSet "GATEKEEPER_RESULT=BLOCK,GATEKEEPER_REASON=objection,')


def test_hangup_line_before_the_reply_is_not_a_reply(config: Path) -> None:
    code, commands, _ = run_agi(config, ["acme-sales"], env_block(), [b"HANGUP\n200 result=0\n"])
    assert code == 0 and len(commands) == 1


def test_bad_configuration_exits_without_setting_variables(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[index]\n")
    code, commands, err = run_agi(bad, ["campaign=acme-sales"], env_block(), [b"200 result=0\n"])
    assert code == 1 and commands == []
    assert b"index.pepper: missing" in err
