"""`make run`: the demo works out of the box and shows every kind of decision."""

from __future__ import annotations

import pytest

from gatekeeper.demo import SCENARIOS, run_demo
from gatekeeper.devservers import PrivateRedis

pytestmark = pytest.mark.integration


async def test_demo_shows_explained_decisions(redis_server: PrivateRedis, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_demo(redis_server.url) == 0
    first = capsys.readouterr().out
    for reason in ("consent", "customer", "former-customer", "no-basis", "objection", "outside-hours", "suppressed",
                   "caller-id", "service-call", "emergency", "invalid-number", "unknown-campaign"):  # fmt: skip
        assert f" {reason} " in first, reason
    assert "ALLOW*  no-basis" in first  # monitor mode
    assert first.count("\n        ") == len(SCENARIOS) + 1  # one explanation per decision
    assert "612345678" not in first.replace("+31 6 ****5678", "")
    # A second run starts again from the sample data (the objection of the first run is gone).
    assert await run_demo(redis_server.url) == 0
    second = capsys.readouterr().out
    assert second.splitlines()[4:6] == first.splitlines()[4:6]
