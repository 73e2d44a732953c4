"""`make run`: the demo works out of the box, shows every kind of decision and keeps its data apart."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from gatekeeper.demo import AMSTERDAM, KEY_PREFIX, LIVE_CALLS, SCENARIOS, run_demo
from gatekeeper.devservers import PrivateRedis, free_port, redis_reachable
from gatekeeper.log.query import LogReader
from gatekeeper.web.inputs import ApiError

pytestmark = pytest.mark.integration

SUNDAY_NIGHT = dt.datetime(2026, 12, 6, 3, 0, tzinfo=AMSTERDAM)  # outside the calling hours
MONDAY_MORNING = dt.datetime(2026, 12, 7, 10, 30, tzinfo=AMSTERDAM)  # where the demo's clock then starts
TIMEOUT = 60.0  # seconds for a demo subprocess to reach a line or to exit


@pytest.fixture
def own_redis() -> Iterator[PrivateRedis]:
    """A redis-server for one test, so that every key left in it is the demo's."""
    with PrivateRedis() as server:
        yield server


def key_count(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.dbsize())
    finally:
        client.close()


async def test_demo_shows_explained_decisions_and_live_calls(
    own_redis: PrivateRedis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_demo(own_redis.url, workdir=tmp_path, now=SUNDAY_NIGHT) == 0
    first = capsys.readouterr().out
    rule_book, _, live = first.partition("2. gatekeeper serve")
    for reason in ("consent", "customer", "former-customer", "no-basis", "objection", "outside-hours", "suppressed",
                   "caller-id", "service-call", "emergency", "invalid-number", "unknown-campaign"):  # fmt: skip
        assert f" {reason} " in rule_book, reason
    assert "ALLOW*  no-basis" in rule_book  # monitor mode
    assert rule_book.count("\n        ") == len(SCENARIOS)  # one explanation per decision
    assert "the demo decides as if it were Mon 07 Dec 10:30" in live
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
    # The demo's own decision log holds its live FastAGI calls, at the demo's time, and none of the rule
    # book's scenarios (chosen times, some in the future); the objection is in the audit trail.
    reader = LogReader.from_dsn(f"sqlite:///{tmp_path}/decisions.db")
    records = [stored.record async for stored in reader.iter_decisions()]
    assert len(records) == len(LIVE_CALLS) + 1
    assert {r.source for r in records} == {"fastagi"}
    assert all(MONDAY_MORNING <= r.at < MONDAY_MORNING + dt.timedelta(minutes=5) for r in records)
    assert [a.action for a in await reader.list_audit()] == ["objection"]
    await reader.close()
    # Nothing of the demo is left in the Redis it used.
    assert key_count(own_redis.url) == 0
    assert "removed the demo's 4,1" in first
    # A second run starts again from the sample data (the objection of the first run is gone), under a
    # prefix of its own, and adds its live calls to the same log.
    assert await run_demo(own_redis.url, workdir=tmp_path, now=SUNDAY_NIGHT) == 0
    second = capsys.readouterr().out
    assert second.partition("2. gatekeeper serve")[0].partition("loaded")[2] == rule_book.partition("loaded")[2]
    prefixes = [out.partition(f"Redis keys: '{KEY_PREFIX}-")[2][:8] for out in (first, second)]
    assert all(len(p) == 8 for p in prefixes) and prefixes[0] != prefixes[1]
    reader = LogReader.from_dsn(f"sqlite:///{tmp_path}/decisions.db")
    assert await reader.count() == 2 * (len(LIVE_CALLS) + 1)
    await reader.close()
    assert key_count(own_redis.url) == 0


async def test_demo_removes_its_keys_after_an_error(
    own_redis: PrivateRedis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "decisions.db").mkdir()  # the decision log cannot be opened: the demo fails half-way
    with pytest.raises(ApiError, match="decision log"):
        await run_demo(own_redis.url, workdir=tmp_path, now=SUNDAY_NIGHT)
    assert "AGISTATUS=SUCCESS" in capsys.readouterr().out  # it got as far as the live calls
    assert key_count(own_redis.url) == 0


class DemoProcess:
    """`gatekeeper demo` in a subprocess, its output read line by line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gatekeeper.cli", "demo", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.lines: list[str] = []

    def wait_for(self, text: str) -> str:
        """Read lines until one contains `text`; that line."""
        assert self.process.stdout is not None
        timer = threading.Timer(TIMEOUT, self.process.kill)  # a hung demo fails the test instead of hanging it
        timer.start()
        try:
            for line in self.process.stdout:
                self.lines.append(line)
                if text in line:
                    return line
        finally:
            timer.cancel()
        raise AssertionError(f"the demo ended without printing {text!r}: {''.join(self.lines)[-2000:]}")

    def stop(self, sig: signal.Signals) -> tuple[int, str, str]:
        self.process.send_signal(sig)
        out, err = self.process.communicate(timeout=TIMEOUT)
        return self.process.returncode, "".join(self.lines) + out, err

    def finish(self) -> None:
        """End the demo if a failed test left it running: SIGTERM (it then cleans up), else SIGKILL."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate()


@pytest.fixture
def start_demo() -> Iterator[Callable[..., DemoProcess]]:
    """Start `gatekeeper demo ARGS...` subprocesses; none outlives the test."""
    started: list[DemoProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> DemoProcess:
        started.append(DemoProcess(*args, env=env))
        return started[-1]

    yield start
    for demo in started:
        demo.finish()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_serving_demo_stopped_by_a_signal_leaves_no_keys(
    start_demo: Callable[..., DemoProcess], own_redis: PrivateRedis, tmp_path: Path, sig: int
) -> None:
    demo = start_demo("--redis-url", own_redis.url, "--workdir", str(tmp_path))
    demo.wait_for("Press Ctrl-C to stop")
    assert key_count(own_redis.url) > 4000  # the sample data: 10 records, 4,096 generation pointers
    status, out, err = demo.stop(signal.Signals(sig))
    assert status == 0, err
    assert "removed the demo's 4,1" in out
    assert key_count(own_redis.url) == 0


def test_a_demo_interrupted_half_way_leaves_no_keys(
    start_demo: Callable[..., DemoProcess], own_redis: PrivateRedis, tmp_path: Path
) -> None:
    demo = start_demo("--redis-url", own_redis.url, "--workdir", str(tmp_path), "--once")
    demo.wait_for("1. The rule book")  # the sample data is loaded; the calls are still to come
    status, out, err = demo.stop(signal.SIGINT)
    assert status == 128 + signal.SIGINT, out + err
    assert "stopped by SIGINT" in err and "Traceback" not in err
    assert "AGISTATUS" not in out
    assert key_count(own_redis.url) == 0


def test_the_demo_stops_its_private_redis_server(start_demo: Callable[..., DemoProcess], tmp_path: Path) -> None:
    demo = start_demo("--workdir", str(tmp_path))
    line = demo.wait_for("started a private redis-server at ")
    url = line.partition(" at ")[2].split()[0]
    demo.wait_for("Press Ctrl-C to stop")
    assert redis_reachable(url)
    status, _, err = demo.stop(signal.SIGINT)
    assert status == 0, err
    assert not redis_reachable(url)


def test_without_redis_server_the_demo_uses_a_reachable_redis_and_cleans_it(
    start_demo: Callable[..., DemoProcess], tmp_path: Path
) -> None:
    with PrivateRedis(password="demo-secret-4711") as shared:
        no_redis_server = {"PATH": str(tmp_path / "bin"), "GATEKEEPER_REDIS_URL": shared.url}
        demo = start_demo("--workdir", str(tmp_path), "--once", env=no_redis_server)
        demo.wait_for(f"redis-server is not installed: using the Redis at redis://:***@127.0.0.1:{shared.port}/0")
        out, err = demo.process.communicate(timeout=TIMEOUT)
        assert demo.process.returncode == 0, err
        assert "BLOCK objection" in out
        assert "demo-secret-4711" not in "".join(demo.lines) + out + err
        assert key_count(shared.url) == 0


def test_without_any_redis_the_demo_says_what_it_needs(start_demo: Callable[..., DemoProcess], tmp_path: Path) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    demo = start_demo("--workdir", str(tmp_path), env={"PATH": str(tmp_path / "bin"), "GATEKEEPER_REDIS_URL": nowhere})
    _, err = demo.process.communicate(timeout=TIMEOUT)
    assert demo.process.returncode == 2
    assert err == (
        f"gatekeeper: the demo needs Redis: install redis-server (`make run` does), or start one at {nowhere}, "
        "or pass --redis-url\n"
    )
