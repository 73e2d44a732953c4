"""gatekeeper serve's FastAGI server, driven by the trace-faithful Asterisk simulator."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gatekeeper.compose import build_service
from gatekeeper.config import Settings
from gatekeeper.devservers import PrivateRedis, free_port
from gatekeeper.index.loader import Loader
from gatekeeper.index.store import ConsentIndex
from gatekeeper.service import Service
from gatekeeper.simulator.fastagi import AgiStatus, SessionResult, SimChannel, SimulatedCall, run_session
from tests.conftest import PEPPER, make_settings, pinned, write_csv

pytestmark = pytest.mark.integration
ROWS = [
    "acme,0612345678,consent,2020-01-01,,form-1",
    "acme,0612345680,consent,2020-01-01,,form-2",
    "acme,0612345680,objection,2021-01-01,,call",
    "goededoel,0612345681,customer,2015-01-01,,donor",
]
POOL = "+31201234567"


async def load(settings: Settings, tmp_path: Path) -> None:
    index = ConsentIndex.from_settings(settings.index)
    await Loader(index).load(write_csv(tmp_path / "data.csv", ROWS), region="NL", replace=True)
    await index.close()


@pytest.fixture
async def started(redis_server: PrivateRedis, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    services: list[Service] = []

    async def start(**sections: dict[str, Any]) -> Service:
        settings = make_settings(redis_server.url, sections=sections)
        await load(settings, tmp_path)
        service = build_service(settings, registry=CollectorRegistry(), clock=pinned())
        await service.start()
        services.append(service)
        return service

    yield start
    for service in services:
        await service.stop()


def port_of(service: Service) -> int:
    return next(c for c in service.components if c.name == "fastagi").port  # type: ignore[attr-defined,no-any-return]


def channel(**fields: Any) -> SimChannel:
    """A Local channel calling 0612345678 for campaign acme-sales with a registered caller ID."""
    base = SimChannel(
        url="agi://127.0.0.1:4573/check?campaign=acme-sales",
        callerid_num=POOL,
        callingpres=0,
        variables={},
        functions={"CHANNEL(linkedid)": "1795860072.68"},
    )
    return replace(base, **fields)


async def call(service: Service, **fields: Any) -> SessionResult:
    return await run_session("127.0.0.1", port_of(service), channel=channel(**fields))


def verdict(result: SessionResult) -> tuple[str | None, str | None]:
    return result.variables.get("GATEKEEPER_RESULT"), result.variables.get("GATEKEEPER_REASON")


def commands(result: SessionResult) -> list[bytes]:
    return [c.line for c in result.commands]


async def test_allowed_call_sets_three_variables_in_one_mset(started: Callable[..., Any]) -> None:
    service = await started()
    result = await call(service)
    assert verdict(result) == ("ALLOW", "consent")
    assert len(result.variables["GATEKEEPER_DECISION_ID"]) == 26
    assert result.agi_status is AgiStatus.SUCCESS and result.dialplan_continues
    assert commands(result) == [
        f'EXEC MSet "GATEKEEPER_RESULT=ALLOW,GATEKEEPER_REASON=consent,GATEKEEPER_DECISION_ID='
        f'{result.variables["GATEKEEPER_DECISION_ID"]}"'.encode()
    ]
    assert not result.pipelined_commands


async def test_blocked_and_monitor_calls(started: Callable[..., Any]) -> None:
    service = await started()
    assert verdict(await call(service, extension="0612345680")) == ("BLOCK", "objection")
    assert verdict(await call(service, extension="0612345699")) == ("BLOCK", "no-basis")
    shadow = await call(service, extension="0612345699", url="agi://gk/check?campaign=acme-shadow")
    assert verdict(shadow) == ("ALLOW", "no-basis")  # monitor mode: allowed, reason kept


async def test_unknown_campaign_and_invalid_number(started: Callable[..., Any]) -> None:
    service = await started()
    assert verdict(await call(service, url="agi://gk/check?campaign=nope")) == ("BLOCK", "unknown-campaign")
    assert verdict(await call(service, extension="12")) == ("BLOCK", "invalid-number")
    garbage = await call(service, url="agi://gk/check?campaign=acme-sales&number=%3Bhangup%22")
    assert verdict(garbage) == ("BLOCK", "invalid-number")


async def test_number_from_query_string_wins_over_extension(started: Callable[..., Any]) -> None:
    service = await started()
    result = await call(service, extension="s", url="agi://gk/check?campaign=acme-sales&number=%2B31612345678")
    assert verdict(result) == ("ALLOW", "consent")


async def test_campaign_from_channel_variable_then_accountcode(started: Callable[..., Any]) -> None:
    service = await started()
    from_var = await call(service, url="agi://127.0.0.1:4573/check", variables={"GATEKEEPER_CAMPAIGN": "acme-sales"})
    assert verdict(from_var) == ("ALLOW", "consent")
    assert commands(from_var)[0] == b'GET FULL VARIABLE "${GATEKEEPER_CAMPAIGN}|${CHANNEL(linkedid)}"'
    from_account = await call(service, url="agi://127.0.0.1:4573/check", accountcode="acme-sales")
    assert verdict(from_account) == ("ALLOW", "consent")
    neither = await call(service, url="agi://127.0.0.1:4573/check")
    assert verdict(neither) == ("BLOCK", "unknown-campaign")


async def test_caller_id_rule_from_the_environment(started: Callable[..., Any]) -> None:
    service = await started()
    assert verdict(await call(service, callingpres=0x20)) == ("BLOCK", "caller-id")  # withheld
    assert verdict(await call(service, callerid_num=None, callingpres=67)) == ("BLOCK", "caller-id")  # unknown
    assert verdict(await call(service, callerid_num="+31209999999")) == ("BLOCK", "caller-id")  # not in pool


async def test_redis_stopped_mid_run_fails_closed_and_recovers(tmp_path: Path) -> None:
    port = free_port()
    redis = PrivateRedis(port=port).start()
    try:
        settings = make_settings(redis.url, sections={"fastagi": {"budget_ms": 200}})
        await load(settings, tmp_path)
        service = build_service(settings, registry=CollectorRegistry(), clock=pinned())
        await service.start()
        try:
            assert verdict(await call(service)) == ("ALLOW", "consent")
            redis.stop()
            down = await call(service)
            assert verdict(down) == ("BLOCK", "index-unavailable")
            assert down.duration < 1.0
            failed = service.metrics.registry.get_sample_value(
                "gatekeeper_fail_closed_decisions_total", {"campaign": "acme-sales"}
            )
            assert failed == 1.0
            redis = PrivateRedis(port=port).start()  # an empty Redis came back: data must be re-imported
            await load(settings, tmp_path)
            assert verdict(await call(service)) == ("ALLOW", "consent")
        finally:
            await service.stop()
    finally:
        redis.stop()


async def test_hangup_mid_session_still_sets_the_variables(started: Callable[..., Any]) -> None:
    service = await started()
    result = await call(service, hangup_after_connect=0.0)
    assert result.agi_status is AgiStatus.HANGUP
    assert verdict(result) == ("ALLOW", "consent")  # variables set on a dead channel are visible in h


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """What the server sent before it closed (a reset, when it closed with our bytes unread, counts too)."""
    try:
        return await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        return b""


async def raw_session(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
    except ConnectionResetError:
        return b""
    data = await read_until_closed(reader)
    writer.close()
    return data


ENV = (
    b"agi_network: yes\nagi_network_script: check?campaign=acme-sales\nagi_request: agi://127.0.0.1/check\n"
    b"agi_uniqueid: 1.1\nagi_callerid: +31201234567\nagi_callingpres: 0\nagi_extension: 0612345678\n"
)


async def test_garbage_and_over_long_lines_are_cut_off(started: Callable[..., Any]) -> None:
    service = await started()
    port = port_of(service)
    assert await raw_session(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    assert await raw_session(port, ENV + b"agi_x: " + b"A" * 10_000 + b"\n\n") == b""
    assert await raw_session(port, b"agi_a: 1\n" * 500) == b""
    sessions = service.metrics.registry.get_sample_value(
        "gatekeeper_fastagi_sessions_total", {"outcome": "protocol-error"}
    )
    assert sessions == 3.0
    assert verdict(await call(service)) == ("ALLOW", "consent")  # still serving


async def test_slow_client_is_cut_off_at_the_environment_deadline(started: Callable[..., Any]) -> None:
    service = await started(fastagi={"listen": "127.0.0.1:0", "env_timeout_ms": 200})
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(service))
    writer.write(ENV[:40])  # and then nothing
    await writer.drain()
    assert await read_until_closed(reader) == b""  # the server closed
    writer.close()
    assert service.metrics.registry.get_sample_value("gatekeeper_fastagi_sessions_total", {"outcome": "timeout"}) == 1
    assert service.metrics.registry.get_sample_value("gatekeeper_fastagi_sessions_open") == 0


async def test_source_not_on_the_allow_list_is_refused(started: Callable[..., Any]) -> None:
    service = await started(fastagi={"listen": "127.0.0.1:0", "allow_from": ["127.0.0.1/32"]})
    sock = socket.socket()
    sock.bind(("127.0.0.2", 0))  # another loopback address
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port_of(service)))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(ENV + b"\n")
    assert await read_until_closed(reader) == b""
    writer.close()
    assert service.metrics.registry.get_sample_value("gatekeeper_fastagi_sessions_total", {"outcome": "denied"}) == 1
    assert verdict(await call(service)) == ("ALLOW", "consent")  # 127.0.0.1 still works


async def test_session_limit_refuses_the_excess(started: Callable[..., Any]) -> None:
    service = await started(fastagi={"listen": "127.0.0.1:0", "max_sessions": 2, "env_timeout_ms": 3000})
    port = port_of(service)
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    for _, writer in held:
        writer.write(b"agi_network: yes\n")
        await writer.drain()
    async with asyncio.timeout(2):  # the server's own gauge says when both sessions are open
        while service.metrics.registry.get_sample_value("gatekeeper_fastagi_sessions_open") != 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    result = await call(service)
    assert verdict(result) == (None, None)  # refused: the dialplan sees no ALLOW and blocks
    for _, writer in held:
        writer.close()


async def test_500_concurrent_sessions(started: Callable[..., Any]) -> None:
    # The simulated Asterisks share this process's CPU with the server; a generous budget keeps this a test
    # of correctness under concurrency (bench/ measures the burst with the server in its own process).
    service = await started(fastagi={"listen": "127.0.0.1:0", "budget_ms": 2000})
    numbers = ["0612345678", "0612345680", "0612345699", "12"]
    results = await asyncio.gather(*(call(service, extension=numbers[i % 4]) for i in range(500)))
    expected = [("ALLOW", "consent"), ("BLOCK", "objection"), ("BLOCK", "no-basis"), ("BLOCK", "invalid-number")]
    assert [verdict(r) for r in results] == [expected[i % 4] for i in range(500)]
    assert len({r.variables["GATEKEEPER_DECISION_ID"] for r in results}) == 500
    assert all(not r.pipelined_commands for r in results)


async def test_stop_finishes_sessions_in_flight(started: Callable[..., Any]) -> None:
    service = await started()
    port = port_of(service)
    sim = SimulatedCall("127.0.0.1", port, channel=channel(url="agi://gk/check"))
    task = asyncio.create_task(sim.run())
    await asyncio.wait_for(sim.connected.wait(), 2)
    stopping = asyncio.create_task(service.stop())
    result = await asyncio.wait_for(task, 5)
    await stopping
    assert result.agi_status is AgiStatus.SUCCESS
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


def wait_for_open_sessions(http_port: int, count: int) -> None:
    """Until the server's own gauge (on /metrics) counts `count` open FastAGI sessions."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=2) as response:
            if f"gatekeeper_fastagi_sessions_open {float(count)}" in response.read().decode():
                return
        time.sleep(0.02)
    raise AssertionError(f"the server never had {count} open FastAGI session(s)")


def test_sigterm_drains_and_exits(tmp_path: Path, redis_server: PrivateRedis) -> None:
    agi_port, http_port = free_port(), free_port()
    config = tmp_path / "gk.toml"
    config.write_text(
        f'[index]\nredis_url = "{redis_server.url}"\npepper = "{PEPPER}"\nprefix = "sig"\n'
        f'[fastagi]\nlisten = "127.0.0.1:{agi_port}"\n[http]\nlisten = "127.0.0.1:{http_port}"\n'
        '[campaigns.acme-sales]\ntenant = "acme"\n'
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    output = tmp_path / "serve.log"
    with output.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gatekeeper.cli", "--config", str(config), "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = 100
        while deadline:
            try:
                with socket.create_connection(("127.0.0.1", agi_port), timeout=0.1) as probe:
                    probe.close()
                break
            except OSError:
                deadline -= 1
                proc.poll()
                assert proc.returncode is None, output.read_text()
                time.sleep(0.05)
        # A session in flight: the environment block is only half sent when SIGTERM arrives.
        with socket.create_connection(("127.0.0.1", agi_port)) as sock:
            sock.sendall(ENV)
            wait_for_open_sessions(http_port, 1)  # accepted: SIGTERM now finds it in flight, not in the backlog
            proc.send_signal(signal.SIGTERM)
            sock.sendall(b"\n")
            with sock.makefile("rb") as replies:
                data = replies.readline()
            assert data.startswith(b'EXEC MSet "GATEKEEPER_RESULT=BLOCK,GATEKEEPER_REASON=no-basis,')
            sock.sendall(b"200 result=0\n")
        assert proc.wait(10) == 0, output.read_text()
        assert "stopping: finishing the calls in flight" in output.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_thousand_stalled_clients_delay_no_call(started: Callable[..., Any]) -> None:
    """Half-sent environment blocks hold no decision slot and no task: an honest call is answered as fast as
    ever while 1,000 of them are connected (they are cut off at their own deadline, counted from accept)."""
    service = await started(fastagi={"listen": "127.0.0.1:0", "env_timeout_ms": 30_000, "max_active": 4})
    port = port_of(service)
    baseline = sorted([(await call(service)).duration for _ in range(5)])[2]
    stalled = []
    for _ in range(1000):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(ENV[: len(ENV) // 2])  # half an environment block, then silence
        stalled.append((reader, writer))
    try:
        async with asyncio.timeout(10):  # the server's own gauge says when all of them are open
            while (service.metrics.registry.get_sample_value("gatekeeper_fastagi_sessions_open") or 0) < 1000:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        results = [await call(service) for _ in range(5)]
        assert all(verdict(r) == ("ALLOW", "consent") for r in results)
        median = sorted(r.duration for r in results)[2]
        assert median < 0.010, (
            f"a call took {median * 1000:.1f} ms with 1,000 stalled clients (alone: {baseline * 1000:.1f})"
        )
    finally:
        for _, writer in stalled:
            writer.close()
