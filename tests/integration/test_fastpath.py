"""The lookup fast path: pipelined requests on one hiredis connection, matched to their callers."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from gatekeeper.devservers import PrivateRedis
from gatekeeper.index.fastpath import Endpoint, FastPath, _pack, pack_head, with_last

pytestmark = pytest.mark.integration


def test_endpoints_from_urls() -> None:
    e = Endpoint.from_url("rediss://user:pw@redis.example:6380/3?ssl_cert_reqs=none")
    assert e is not None
    assert (e.host, e.port, e.tls, e.verify, e.username, e.password, e.db) == (
        "redis.example", 6380, True, False, "user", "pw", 3,
    )  # fmt: skip
    unix = Endpoint.from_url("unix:///run/redis.sock?db=2")
    assert unix is not None and (unix.path, unix.db) == ("/run/redis.sock", 2)
    assert Endpoint.from_url("redis+cluster://a:1,b:2") is None
    assert "pw" not in repr(e)


async def test_concurrent_calls_get_their_own_replies_even_when_some_are_cancelled(redis_server: PrivateRedis) -> None:
    endpoint = Endpoint.from_url(redis_server.url)
    assert endpoint is not None
    fast = FastPath(endpoint)
    try:
        await fast.call("SET", "fp:k", "v")
        calls = [asyncio.ensure_future(fast.call("ECHO", f"m{i}")) for i in range(200)]
        for i in range(0, 200, 7):
            calls[i].cancel()
        results = await asyncio.gather(*calls, return_exceptions=True)
        for i, result in enumerate(results):
            if i % 7 == 0:
                assert isinstance(result, asyncio.CancelledError)
            else:
                assert result == f"m{i}".encode()
        assert await fast.call("GET", "fp:k") == b"v"
        with pytest.raises(NoScriptError):
            await fast.call("EVALSHA", "0" * 40, 0)
        with pytest.raises(ResponseError):
            await fast.call("INCR", "fp:k")  # not an integer
    finally:
        await fast.close()


async def test_password_and_database() -> None:
    with PrivateRedis(password="s3cret-pass") as server:
        good = Endpoint.from_url(f"redis://:s3cret-pass@127.0.0.1:{server.port}/4")
        bad = Endpoint.from_url(f"redis://:wrong@127.0.0.1:{server.port}/0")
        assert good is not None and bad is not None
        fast = FastPath(good)
        await fast.call("SET", "x", "in-db-4")
        assert await fast.call("GET", "x") == b"in-db-4"
        await fast.close()
        with pytest.raises(RedisConnectionError, match="refused the connection set-up"):
            await FastPath(bad).call("PING")


async def test_a_peer_that_stops_answering_is_dropped_and_the_next_call_reconnects() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        # Answer the connection set-up (CLIENT SETNAME) once, then never again.
        await reader.readuntil(b"gatekeeper-lookup\r\n")
        writer.write(b"+OK\r\n")
        with contextlib.suppress(ConnectionError):
            await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fast = FastPath(Endpoint(port=port), stall_after=0.2)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await fast.call("PING")
        assert len(accepted) == 1
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await fast.call("PING")  # the stalled connection is dropped; this one is new
        assert len(accepted) == 2
    finally:
        await fast.close()
        server.close()
        for writer in accepted:
            writer.close()
        await server.wait_closed()


async def test_a_lost_connection_fails_the_waiters_and_recovers(redis_server: PrivateRedis) -> None:
    with PrivateRedis() as server:
        endpoint = Endpoint.from_url(server.url)
        assert endpoint is not None
        fast = FastPath(endpoint)
        assert await fast.call("PING") == b"PONG"
        port = server.port
    with pytest.raises((RedisConnectionError, OSError)):
        await fast.call("PING")
    with PrivateRedis(port=port):
        assert await fast.call("PING") == b"PONG"
    await fast.close()


def test_a_command_head_with_its_last_argument_is_what_hiredis_packs() -> None:
    head = pack_head("XADD", "gk:outbox:pbx-1", "*", b"r")
    for payload in (b"", b'{"v":1}', "zoë\r\n".encode() * 100):
        assert with_last(head, payload) == _pack(("XADD", "gk:outbox:pbx-1", "*", b"r", payload))
