"""The lookup fast path: one pipelined RESP connection, parsed by hiredis.

Every call waits for one Redis round trip, and on this path the client's own work is most of a decision's
CPU: redis-py's asyncio client spends about 80 µs of CPU on a GET (command packing in Python, the pool,
retries), an asyncio protocol with hiredis' packer and parser about 30 µs. So lookups on a standalone
Redis (redis://, rediss://, unix://) go through this small connection: requests are written as they come
(several calls share the socket; Redis answers in order), replies are matched to waiters in order.
Everything else (imports, objections, erasures, Redis Cluster and Sentinel) uses redis-py.

Requests made in one turn of the event loop go out in one write (a lookup and another call's decision
record, say): at ten calls in flight that halves the system calls per decision.

A lookup cancelled by its time budget leaves its place in the queue; its reply is read and dropped. When
the oldest request has waited longer than `stall_after`, the connection is presumed dead (a peer that
vanished without a reset) and is dropped; the next call reconnects.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

STANDALONE_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket
    tls: bool = False
    verify: bool = True
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    db: int = 0

    @classmethod
    def from_url(cls, url: str) -> Endpoint | None:
        """The endpoint of a standalone Redis URL, or None for Cluster/Sentinel URLs."""
        scheme = urlsplit(url).scheme
        if scheme not in STANDALONE_SCHEMES:
            return None
        kwargs: dict[str, Any] = dict(parse_url(url))
        return cls(
            host=str(kwargs.get("host") or "127.0.0.1"),
            port=int(kwargs.get("port") or 6379),
            path=kwargs.get("path"),
            tls=scheme == "rediss",
            verify=str(kwargs.get("ssl_cert_reqs", "required")).lower() not in ("none", "optional"),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            db=int(kwargs.get("db") or 0),
        )


def _pack(args: tuple[bytes | str | int | None, ...]) -> bytes:
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # its stub types a 1-tuple only
    return packed


def pack_head(*words: str | bytes) -> bytes:
    """A command's first words in RESP, for a command whose last argument is added per call (`with_last`)."""
    parts = [b"*%d\r\n" % (len(words) + 1)]
    for word in words:
        data = word.encode() if isinstance(word, str) else word
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def with_last(head: bytes, argument: bytes) -> bytes:
    """The whole command: `head` (from `pack_head`) and its last argument."""
    return head + b"$%d\r\n%b\r\n" % (len(argument), argument)


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Resp(asyncio.Protocol):
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()  # once: every lookup of the connection uses it
        self.reader = hiredis.Reader()
        # (sent at, waiter, its deadline's timer): replies come in order, so the oldest waits longest
        self.waiters: collections.deque[tuple[float, asyncio.Future[Any], asyncio.TimerHandle | None]] = (
            collections.deque()
        )
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._outgoing: list[bytes] = []  # requests of this turn of the loop, written together by _flush

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                _, waiter, deadline = self.waiters.popleft()
                if deadline is not None:
                    deadline.cancel()
                if not waiter.done():  # done: it timed out; its reply is dropped
                    waiter.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self._fail(RedisConnectionError(f"Redis protocol error: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(RedisConnectionError("the connection to Redis was lost"))

    def _fail(self, error: Exception) -> None:
        while self.waiters:
            _, waiter, deadline = self.waiters.popleft()
            if deadline is not None:
                deadline.cancel()
            if not waiter.done():
                waiter.set_exception(error)

    def request(self, packed: bytes, within: float | None = None) -> asyncio.Future[Any]:
        """The reply's future; with `within` (seconds), it fails with TimeoutError when no reply came in time."""
        loop = self.loop
        waiter = loop.create_future()
        if self.lost or self.transport is None:
            waiter.set_exception(RedisConnectionError("the connection to Redis is closed"))
            return waiter
        now = loop.time()
        deadline = None if within is None else loop.call_at(now + within, _expire, waiter)
        self.waiters.append((now, waiter, deadline))
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(packed)
        return waiter

    def request_many(self, packed: list[bytes]) -> list[asyncio.Future[Any]]:
        """Several requests in one write (a pipeline): replies come back in the same order."""
        return [self.request(p) for p in packed]

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self.transport is not None and not self.lost:
            self.transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def stalled(self, after: float) -> bool:
        return bool(self.waiters) and self.loop.time() - self.waiters[0][0] > after


class FastPath:
    """Pipelined requests on one connection to a standalone Redis; see the module docstring."""

    def __init__(self, endpoint: Endpoint, *, connect_timeout: float = 1.0, stall_after: float = 1.0) -> None:
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.stall_after = stall_after
        self._conn: _Resp | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connection(self) -> _Resp:
        conn = self._conn
        if conn is not None and not conn.lost:
            if not conn.stalled(self.stall_after):
                return conn
            assert conn.transport is not None
            conn.transport.abort()  # a peer that no longer answers: start again
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is not None and not self._conn.lost and self._conn is not conn:
                return self._conn
            self._conn = await self._open()
            return self._conn

    async def _open(self) -> _Resp:
        loop = asyncio.get_running_loop()
        e = self.endpoint
        async with asyncio.timeout(self.connect_timeout):
            if e.path is not None:
                _, conn = await loop.create_unix_connection(_Resp, e.path)
            else:
                context = None
                if e.tls:
                    context = ssl.create_default_context()
                    if not e.verify:
                        context.check_hostname = False
                        context.verify_mode = ssl.CERT_NONE
                _, conn = await loop.create_connection(_Resp, e.host, e.port, ssl=context)
            setup = []
            if e.password is not None:
                auth = ("AUTH", e.username, e.password) if e.username else ("AUTH", e.password)
                setup.append(conn.request(_pack(auth)))
            if e.db:
                setup.append(conn.request(_pack(("SELECT", e.db))))
            setup.append(conn.request(_pack(("CLIENT", "SETNAME", "gatekeeper-lookup"))))
            for reply in await asyncio.gather(*setup):
                if isinstance(reply, hiredis.ReplyError):
                    assert conn.transport is not None
                    conn.transport.close()
                    raise RedisConnectionError(f"Redis refused the connection set-up: {reply}")
        return conn

    async def call(self, *args: bytes | str | int, within: float | None = None) -> Any:
        """One command; Redis error replies raise ResponseError (NoScriptError for NOSCRIPT).

        `within` bounds the wait for the reply in seconds (TimeoutError after it), without the task
        bookkeeping of `asyncio.timeout`: the lookups and decision records of every call use it.
        """
        return await self.call_packed(_pack(args), within=within)

    async def call_packed(self, packed: bytes, *, within: float | None = None) -> Any:
        """One command already in RESP form (`call` packs it; a hot caller may prepare its own bytes)."""
        conn = self._conn
        if conn is None or conn.lost or conn.stalled(self.stall_after):
            if within is None:
                conn = await self._connection()
            else:
                async with asyncio.timeout(within):  # (re)connecting counts against the budget too
                    conn = await self._connection()
        reply = await conn.request(packed, within)
        if isinstance(reply, hiredis.ReplyError):
            text = str(reply)
            raise NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text)
        return reply

    async def call_many(self, commands: list[tuple[bytes | str | int, ...]]) -> list[Any]:
        """Commands written together and answered in order; the first error reply raises (as `call`)."""
        conn = await self._connection()
        replies = await asyncio.gather(*conn.request_many([_pack(c) for c in commands]))
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                text = str(reply)
                raise NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text)
        return replies

    async def close(self) -> None:
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
        self._conn = None
