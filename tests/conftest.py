"""Shared fixtures: a private redis-server for the whole test session, settings and an index per test."""

from __future__ import annotations

import datetime as dt
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gatekeeper.config import Settings, parse
from gatekeeper.core.model import Reason, Verdict
from gatekeeper.devservers import PrivateRedis
from gatekeeper.gate import Clock
from gatekeeper.index.store import ConsentIndex
from gatekeeper.record import DecisionRecord

PEPPER = "test-pepper-0123456789"
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
# Every test that decides a call pins its time (the suite passes at 03:00 on a Sunday and at Christmas too):
TUESDAY_MORNING = dt.datetime(2026, 12, 1, 10, 30, tzinfo=AMSTERDAM)  # within the calling hours, nl-2026


def pinned(at: dt.datetime = TUESDAY_MORNING) -> Clock:
    """A clock that always says `at`."""
    return lambda: at


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


def make_record(**changes: Any) -> DecisionRecord:
    """A blocked call's record, as the gate makes it, with `changes` applied (for tests of its projections;
    the gate itself is tested against a real Redis)."""
    fields: dict[str, Any] = {
        "decision_id": "01JZ0000000000000000000000",
        "at": dt.datetime(2026, 7, 1, 10, 30, 0, 123456, tzinfo=dt.UTC),
        "instance": "pbx-1",
        "campaign": "acme-sales",
        "tenant": "acme",
        "number_masked": "+31 6 ****5678",
        "number_hash": "ab" * 16,
        "verdict": Verdict.BLOCK,
        "reason": Reason.NO_BASIS,
        "would_block": False,
        "regime": "nl-2021",
        "explanation": "No consent and no customer relationship.",
        "basis_reference": None,
        "rule": 10,
        "generation": 7,
        "uniqueid": "1751365800.17",
        "linkedid": "1751365800.16",
        "source": "fastagi",
        "latency_us": 457,
        "index_error": None,
    }
    fields.update(changes)
    return DecisionRecord(**fields)
