"""`make run`: the demo works out of the box and shows every kind of decision."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.demo import LIVE_CALLS, SCENARIOS, run_demo
from gatekeeper.devservers import PrivateRedis
from gatekeeper.log.query import LogReader

pytestmark = pytest.mark.integration


async def test_demo_shows_explained_decisions_and_live_calls(
    redis_server: PrivateRedis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_demo(redis_server.url, workdir=tmp_path) == 0
    first = capsys.readouterr().out
    rule_book, _, live = first.partition("2. gatekeeper serve")
    for reason in ("consent", "customer", "former-customer", "no-basis", "objection", "outside-hours", "suppressed",
                   "caller-id", "service-call", "emergency", "invalid-number", "unknown-campaign"):  # fmt: skip
        assert f" {reason} " in rule_book, reason
    assert "ALLOW*  no-basis" in rule_book  # monitor mode
    assert rule_book.count("\n        ") == len(SCENARIOS)  # one explanation per decision
    live_lines = [line for line in live.splitlines() if "AGISTATUS=SUCCESS" in line]
    assert len(live_lines) == len(LIVE_CALLS) + 1
    assert [line.split()[4:6] for line in live_lines] == [
        ["ALLOW", "consent"],
        ["BLOCK", "no-basis"],
        ["ALLOW", "former-customer"],
        ["BLOCK", "suppressed"],
        ["BLOCK", "caller-id"],
        ["ALLOW", "consent"],
        ["BLOCK", "unknown-campaign"],
        ["BLOCK", "objection"],  # the objection registered during the demo
    ]
    assert "0612345678" not in first and "612345678 " not in first
    assert (tmp_path / "gatekeeper.toml").is_file()
    # Every decision of the demo is in its decision log, and the objection in the audit trail.
    reader = LogReader.from_dsn(f"sqlite:///{tmp_path}/decisions.db")
    assert await reader.count() == len(LIVE_CALLS) + 1  # the live calls only: the scenarios are not calls
    assert [a.action for a in await reader.list_audit()] == ["objection"]
    await reader.close()
    # A second run starts again from the sample data (the objection of the first run is gone).
    assert await run_demo(redis_server.url, workdir=tmp_path) == 0
    second = capsys.readouterr().out
    assert second.partition("2. gatekeeper serve")[0] == rule_book
