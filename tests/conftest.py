"""Shared fixtures: a private redis-server for the whole test session, settings and an index per test."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.config import Settings, parse
from gatekeeper.devservers import PrivateRedis
from gatekeeper.index.store import ConsentIndex

PEPPER = "test-pepper-0123456789"
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


def make_settings(redis_url: str, prefix: str | None = None, **index: Any) -> Settings:
    data = {
        "index": {"redis_url": redis_url, "pepper": PEPPER, "prefix": prefix or f"t{secrets.token_hex(4)}", **index},
        "campaigns": CAMPAIGNS,
    }
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
