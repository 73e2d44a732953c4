"""Shared fixtures: a private redis-server for the whole test session, settings and an index per test."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.config import Settings, parse
from gatekeeper.devservers import PrivateRedis
from gatekeeper.index.store import ConsentIndex

PEPPER = "test-pepper-0123456789"
LOG_DIR = tempfile.TemporaryDirectory(prefix="gatekeeper-test-log-")  # decision logs of the tests' services
CAMPAIGNS: dict[str, Any] = {
    "acme-sales": {"tenant": "acme", "caller_ids": ["+31201234567"]},
    "acme-shadow": {"tenant": "acme", "mode": "monitor"},
    "donors": {"tenant": "goededoel", "organisation": "charity"},
    "other-sales": {"tenant": "other"},
}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[PrivateRedis]:
    with PrivateRedis() as server:
        yield server


def make_settings(
    redis_url: str, prefix: str | None = None, sections: dict[str, Any] | None = None, **index: Any
) -> Settings:
    """Settings for a test: the test campaigns, a fresh key prefix, and any extra TOML sections."""
    name = prefix or f"t{secrets.token_hex(4)}"
    data: dict[str, Any] = {
        "index": {"redis_url": redis_url, "pepper": PEPPER, "prefix": name, **index},
        "campaigns": CAMPAIGNS,
        "fastagi": {"listen": "127.0.0.1:0"},
        "http": {"listen": "127.0.0.1:0"},
        "log": {"dsn": f"sqlite:///{LOG_DIR.name}/{name}.db", "instance": name},
    }
    for name, values in (sections or {}).items():
        data[name] = {**data.get(name, {}), **values}
    return parse(data, "test.toml", {})


@pytest.fixture
def settings(redis_server: PrivateRedis) -> Settings:
    return make_settings(redis_server.url)


@pytest.fixture
async def index(settings: Settings) -> AsyncIterator[ConsentIndex]:
    idx = ConsentIndex.from_settings(settings.index)
    yield idx
    await idx.close()


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("tenant,number,kind,start,end,reference\n" + "".join(r + "\n" for r in rows))
    return path
