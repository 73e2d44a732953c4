"""A running `gatekeeper serve` with the API, the UI and the decision log, for the web tests.

`start_web` builds the service as `gatekeeper serve` does (`gatekeeper.serve.build`); until `build` wires
the decision log and the web itself, the missing parts are added here the same way, so the tests run
against either. `WebService.sync()` makes every decision so far visible in SQL without sleeping: it
waits for the gate's writes to the outbox, then ships the outbox once.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from gatekeeper.compose import build_service
from gatekeeper.config import Settings
from gatekeeper.core.policy import zone
from gatekeeper.index.loader import Loader
from gatekeeper.log.outbox import OutboxKeys
from gatekeeper.log.query import AuditEntry, LogReader
from gatekeeper.log.shipper import Shipper, shipper_client
from gatekeeper.log.store import LogStore
from gatekeeper.service import Service
from gatekeeper.web.auth import hash_token
from tests.conftest import make_settings, write_csv
from tests.pg import shared_postgres

# One token per role (fixed, so a failing test can be replayed by hand); plus one nobody configured.
TOKENS = {role: f"test-{role}-token-{'x' * 24}" for role in ("admin", "compliance", "viewer")}
UNKNOWN_TOKEN = "not-a-configured-token-0123456789"
ROWS = [
    "acme,0612345678,consent,2020-01-01,,form-1",
    "acme,0612345680,consent,2020-01-01,,form-2",
    "acme,0612345680,objection,2021-01-01,,call",
    "goededoel,0612345681,customer,2015-01-01,,donor",
]
POOL = "+31201234567"  # the caller ID registered for acme-sales
INSTANCE = "web-test"
GENEROUS_MS = 2000  # decision budgets: these tests are about the web, not about speed on a busy machine


def call_time(settings: Settings) -> dt.datetime:
    """10:30 in Amsterdam on the first day after today when acme-sales may call (no weekend or holiday).

    After today, so that an objection registered now lies before every test call.
    """
    amsterdam = zone("Europe/Amsterdam")
    hours = settings.campaigns["acme-sales"].jurisdiction.hours
    day = dt.datetime.now(amsterdam).date()
    while True:
        day += dt.timedelta(days=1)
        moment = dt.datetime.combine(day, dt.time(10, 30), tzinfo=amsterdam)
        if day.weekday() < 5 and hours.check(moment).allowed:
            return moment


def moving_clock(start: dt.datetime) -> Callable[[], dt.datetime]:
    """A clock that starts at `start` and runs at real speed (decision times stay in order)."""
    t0 = time.monotonic()
    return lambda: start + dt.timedelta(seconds=time.monotonic() - t0)


def backend_dsn(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'decisions.db'}"
    return shared_postgres().new_schema(f"w_{secrets.token_hex(6)}")


def web_settings(redis_url: str, dsn: str, **sections: dict[str, Any]) -> Settings:
    tokens = [{"name": f"{role}-desk", "role": role, "sha256": hash_token(token)} for role, token in TOKENS.items()]
    base: dict[str, dict[str, Any]] = {
        "http": {"tokens": tokens},
        "log": {"dsn": dsn, "instance": INSTANCE},
        "fastagi": {"budget_ms": GENEROUS_MS},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return make_settings(redis_url, sections=base, timeout_ms=GENEROUS_MS)


@dataclass
class WebService:
    service: Service
    shipper: Shipper
    reader: LogReader  # the tests' own connection to the log
    base_url: str
    http: aiohttp.ClientSession = field(repr=False)

    @property
    def settings(self) -> Settings:
        return self.service.settings

    def fastagi_port(self) -> int:
        return next(c for c in self.service.components if c.name == "fastagi").port  # type: ignore[attr-defined,no-any-return]

    async def sync(self) -> None:
        """Every decision made so far is in SQL when this returns (each was in the outbox before its answer)."""
        await self.shipper.ship_once()

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = TOKENS["admin"],
        body: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        """(status, parsed JSON or text, response) of one API request."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if body is not None:
            data = json.dumps(body)
            sent.setdefault("Content-Type", "application/json")
        async with self.http.request(method, self.base_url + path, data=data, headers=sent) as response:
            text = await response.text()
            parsed: Any = json.loads(text) if response.content_type == "application/json" else text
            return response.status, parsed, response

    async def audit(self) -> list[AuditEntry]:
        return await self.reader.list_audit(limit=1000)

    async def stop(self) -> None:
        await self.http.close()
        await self.reader.close()
        await self.service.stop()


def wire_log(service: Service, settings: Settings) -> Shipper:
    """The decision log as `gatekeeper serve` runs it: the gate's outbox and the shipper (short blocks)."""
    existing = next((c for c in service.components if c.name == "log"), None)
    if isinstance(existing, Shipper):
        existing.block = 0.05
        return existing
    keys = OutboxKeys(settings.index.prefix, settings.log.instance_name)
    shipper = Shipper(
        shipper_client(settings, block=0.05),
        LogStore.from_dsn(settings.log.dsn),
        keys,
        metrics=service.metrics,
        block=0.05,
        retry_initial=0.05,
        retry_max=0.2,
        owns=True,
    )
    service.add(shipper)
    return shipper


async def start_web(
    settings: Settings, tmp_path: Path, *, rows: list[str] | None = None, open_log: bool = True
) -> WebService:
    """The service on loopback with `rows` (default `ROWS`) loaded; `open_log=False` for an unreachable log."""
    service = build_service(settings, registry=CollectorRegistry(), clock=moving_clock(call_time(settings)))
    shipper = wire_log(service, settings)
    if rows is None:
        rows = ROWS
    if rows:
        await Loader(service.index).load(write_csv(tmp_path / "data.csv", rows), region="NL", replace=True)
    # The log schema exists before the service's own connections open: two first connections to a new
    # SQLite file may race on `PRAGMA journal_mode=WAL` ("database is locked"), which is not this test's subject.
    reader = await LogStore.from_dsn(settings.log.dsn).open() if open_log else LogReader.from_dsn(settings.log.dsn)
    try:
        await service.start()
    except BaseException:
        await reader.close()
        await service.stop()
        raise
    http = aiohttp.ClientSession()
    return WebService(service, shipper, reader, f"http://127.0.0.1:{service.http_port}", http)
