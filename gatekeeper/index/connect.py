"""Redis clients for the consent index: one standalone Redis, a Redis Cluster, or a Sentinel-watched primary.

`IndexSettings.redis_url` says which:

    redis://[[user]:password@]host[:port][/db]                  standalone (rediss:// with TLS, unix:///path?db=N)
    redis+cluster://[[user]:password@]host:port[,host:port...]  Redis Cluster, from any of its nodes
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]
                                                                the primary of `service`, as the sentinels say

The user and password in the URL (or `?username=` / `?password=`) are the data nodes' credentials. The
sentinels' own, when they have any (`requirepass` in sentinel.conf), go in `?sentinel_username=` and
`?sentinel_password=`. Hosts are names, IPv4 or bracketed IPv6 addresses; `[::1]:26379`.

Every client has the same shape: bytes replies, bounded connection counts, socket timeouts well above the
lookup budget (the gate's `asyncio.timeout` decides, not the socket) and no automatic retries by default,
so a failing Redis makes the gate fail closed at once instead of after a retry loop.

- Cluster: `RedisCluster` routes each command by its key's slot. Every key of one number shares a hash
  tag, so a lookup (one EVALSHA over five keys) is still one round trip, to the node that owns the slot.
- Sentinel: the client asks the sentinels for the primary's address whenever it opens a connection, so
  after a failover the next connection goes to the promoted replica; no restart is needed. Until the
  sentinels agree on a new primary, lookups fail and the gate blocks (`index-unavailable`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.retry import Retry

from gatekeeper.config import ConfigError, IndexSettings, redact_url

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
SENTINEL_TIMEOUT = 0.5  # seconds to ask one sentinel for the primary (a dead one is skipped after this)
_QUERY_KEYS = frozenset({"username", "password", "sentinel_username", "sentinel_password"})


class Topology(StrEnum):
    STANDALONE = "standalone"
    CLUSTER = "cluster"
    SENTINEL = "sentinel"


SCHEMES = {
    "redis": Topology.STANDALONE,
    "rediss": Topology.STANDALONE,
    "unix": Topology.STANDALONE,
    "redis+cluster": Topology.CLUSTER,
    "redis+sentinel": Topology.SENTINEL,
}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a Cluster or Sentinel URL names (standalone URLs are parsed by redis-py itself)."""

    topology: Topology
    nodes: tuple[tuple[str, int], ...] = ()  # cluster startup nodes, or the sentinels
    service: str = ""  # sentinel: the monitored primary's name
    db: int = 0
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)


def _host_port(text: str, default_port: int, url: str) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = text.partition(":")
    if not host or (port_text and not port_text.isdigit()):
        raise ConfigError(f"{redact_url(url)}: {text!r} is not a host:port")
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ConfigError(f"{redact_url(url)}: port {port} is out of range")
    return host, port


def parse_redis_url(url: str) -> RedisTarget:
    """Parse an index URL; raises `ConfigError` (naming the URL without its passwords) when malformed."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"{redact_url(url)}: not a valid URL ({exc})") from None
    topology = SCHEMES.get(parts.scheme)
    if topology is None:
        raise ConfigError(
            f"{redact_url(url)}: unsupported scheme (redis://, rediss://, unix://, redis+cluster://, redis+sentinel://)"
        )
    if topology is Topology.STANDALONE:
        if parts.scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdecimal():
            raise ConfigError(f"{redact_url(url)}: database {unquote(parts.path.strip('/'))!r} is not a number")
        try:
            aioredis.connection.parse_url(url)  # what the client will do with it: ports, ?db=, options
        except ValueError as exc:
            raise ConfigError(f"{redact_url(url)}: {exc}") from None
        return RedisTarget(topology)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - _QUERY_KEYS)
    if unknown:
        raise ConfigError(f"{redact_url(url)}: unknown option {unknown[0]!r} (known: {', '.join(sorted(_QUERY_KEYS))})")
    default_port = DEFAULT_SENTINEL_PORT if topology is Topology.SENTINEL else DEFAULT_PORT
    nodes = tuple(_host_port(h, default_port, url) for h in hosts.split(",") if h)
    if not nodes:
        raise ConfigError(f"{redact_url(url)}: no host:port given")
    path = [unquote(p) for p in parts.path.split("/") if p]
    service, db = "", 0
    if topology is Topology.SENTINEL:
        if not path or len(path) > 2:
            raise ConfigError(f"{redact_url(url)}: expected redis+sentinel://host:port[,host:port...]/service[/db]")
        service = path[0]
        if len(path) == 2:
            if not path[1].isdigit():
                raise ConfigError(f"{redact_url(url)}: database {path[1]!r} is not a number")
            db = int(path[1])
    elif path:
        raise ConfigError(f"{redact_url(url)}: a Redis Cluster has no databases; remove the path")
    return RedisTarget(
        topology,
        nodes,
        service,
        db,
        username=query.get("username") or unquote(user) or None,
        password=query.get("password") or unquote(password) or None,
        sentinel_username=query.get("sentinel_username") or None,
        sentinel_password=query.get("sentinel_password") or None,
    )


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """A Sentinel-managed pool that waits for a free connection instead of failing when all are busy.

    `SentinelConnectionPool` finds the primary on each connect; `BlockingConnectionPool` bounds the
    connections (a burst of calls queues for `max_connections` connections, as on a standalone Redis).
    """


class _SentinelClient(aioredis.Redis):
    """The primary's client; closing it closes the connections to the sentinels as well."""

    sentinels: tuple[aioredis.Redis, ...] = ()

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for client in self.sentinels:
            await client.aclose()


def connect(
    settings: IndexSettings,
    *,
    retries: int = 0,
    socket_timeout: float | None = None,
    client_name: str = "gatekeeper",
) -> aioredis.Redis:
    """A Redis client for the index (and the decision log's outbox). No retries by default.

    `socket_timeout` overrides the default (20 lookup budgets, at least 1 s): a client that blocks on
    purpose (the shipper's XREADGROUP) needs a longer one. The pool is bounded: a burst of calls shares
    `max_connections` connections (per node on a cluster) instead of opening a connection per call.
    """
    url = settings.redis_url
    target = parse_redis_url(url)
    budget = max(settings.timeout * 20, 1.0)
    common: dict[str, Any] = {
        "decode_responses": False,
        "socket_connect_timeout": budget,
        "socket_timeout": budget if socket_timeout is None else socket_timeout,
        "retry": Retry(NoBackoff(), retries),
        "health_check_interval": 0,
        "client_name": client_name,
    }
    if target.topology is Topology.STANDALONE:
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=settings.max_connections,
            timeout=None,  # wait for a free connection; the gate's budget bounds the wait
            **common,
        )
        return aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it
    if target.topology is Topology.CLUSTER:
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            username=target.username,
            password=target.password,
            # Per node. The cluster client raises instead of waiting when all are busy; lookups are bounded
            # by the index's own in-flight limit, so the headroom is for the outbox and writes.
            max_connections=settings.max_connections * 4,
            require_full_coverage=True,
            **common,
        )
        # RedisCluster is not a redis.asyncio.Redis, but it has the same command methods (and pipelines,
        # EVALSHA, SCRIPT LOAD sent to every primary); the index checks for it where behaviour differs.
        return cast(aioredis.Redis, cluster)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.nodes),
        sentinel_kwargs={
            "socket_connect_timeout": SENTINEL_TIMEOUT,
            "socket_timeout": SENTINEL_TIMEOUT,
            "username": target.sentinel_username,
            "password": target.sentinel_password,
            "decode_responses": False,
            "retry": Retry(NoBackoff(), 0),
        },
    )
    client = sentinel.master_for(
        target.service,
        redis_class=_SentinelClient,
        connection_pool_class=_BlockingSentinelPool,
        db=target.db,
        username=target.username,
        password=target.password,
        max_connections=settings.max_connections,
        timeout=None,
        **common,
    )
    assert isinstance(client, _SentinelClient)
    client.sentinels = tuple(sentinel.sentinels)
    return client


__all__ = ["SCHEMES", "RedisTarget", "Topology", "connect", "parse_redis_url"]
