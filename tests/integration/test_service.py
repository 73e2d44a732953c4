"""`gatekeeper serve` as a whole: health, readiness, metrics, and FastAGI and ARI side by side."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from gatekeeper.compose import build_service
from gatekeeper.devservers import PrivateRedis, free_port
from gatekeeper.index.loader import Loader
from gatekeeper.service import Service
from gatekeeper.simulator.fastagi import SimChannel, run_session
from tests.asterisk_sim.ari import AriSimulator
from tests.conftest import make_settings, pinned, write_csv

pytestmark = pytest.mark.integration


@pytest.fixture
async def ari() -> AsyncIterator[AriSimulator]:
    async with AriSimulator(username="gatekeeper", password="secret-ari") as sim:
        yield sim


async def started(redis_url: str, tmp_path: Path, ari: AriSimulator | None = None) -> Service:
    sections = {}
    if ari is not None:
        sections["ari"] = {"url": ari.base_url, "username": "gatekeeper", "password": "secret-ari"}
    settings = make_settings(redis_url, sections=sections)
    service = build_service(settings, registry=CollectorRegistry(), clock=pinned())
    rows = ["acme,0612345678,consent,2020-01-01,,form-1", "goededoel,0612345681,customer,2015-01-01,,d",
            "other,0612345682,customer,2015-01-01,,o"]  # fmt: skip
    await Loader(service.index).load(write_csv(tmp_path / "d.csv", rows), region="NL", replace=True)
    await service.start()
    return service


async def get(service: Service, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{service.http_port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_health_readiness_and_metrics(redis_server: PrivateRedis, tmp_path: Path) -> None:
    service = await started(redis_server.url, tmp_path)
    try:
        status, body = await get(service, "/healthz")
        assert status == 200 and json.loads(body)["status"] == "alive"
        status, body = await get(service, "/readyz")
        ready = json.loads(body)
        assert status == 200 and ready["ready"] is True
        assert set(ready["checks"]) == {"redis", "index", "fastagi", "outbox", "log"}
        fastagi = next(c for c in service.components if c.name == "fastagi")
        channel = SimChannel(url="agi://gk/check?campaign=acme-sales", callerid_num="+31201234567", callingpres=0)
        await run_session("127.0.0.1", fastagi.port, channel=channel)  # type: ignore[attr-defined]
        status, text = await get(service, "/metrics")
        assert status == 200
        assert 'gatekeeper_decisions_total{campaign="acme-sales",reason="consent",verdict="allow"} 1.0' in text
        assert 'gatekeeper_decisions_total{campaign="donors",reason="objection",verdict="block"} 0.0' in text
        assert "gatekeeper_decision_duration_seconds_bucket" in text
        assert 'gatekeeper_index_generation{tenant="acme"}' in text
        assert "612345678" not in text
    finally:
        await service.stop()


async def test_readiness_reports_what_is_wrong(tmp_path: Path) -> None:
    port = free_port()
    redis = PrivateRedis(port=port).start()
    settings = make_settings(redis.url, sections={})
    service = build_service(settings, registry=CollectorRegistry(), clock=pinned())
    await service.start()  # no data loaded for any tenant: said per tenant, but the instance is ready
    try:
        status, body = await get(service, "/readyz")
        ready = json.loads(body)
        assert status == 200 and ready["ready"] is True
        assert ready["checks"]["redis"]["ok"] is True
        assert ready["checks"]["index"] == {
            "ok": True,
            "detail": "0 of 3 tenant(s) loaded; acme (campaigns acme-sales, acme-shadow): no data loaded; "
            "goededoel (campaign donors): no data loaded; other (campaign other-sales): no data loaded",
        }
        assert ready["tenants"]["other"] == {
            "condition": "no-data",
            "generation": None,
            "campaigns": ["other-sales"],
            "detail": "no data loaded",
        }

        def loaded() -> dict[str, float | None]:
            gauge = service.metrics.registry.get_sample_value
            return {t: gauge("gatekeeper_index_tenant_loaded", {"tenant": t}) for t in ("acme", "goededoel", "other")}

        assert loaded() == {"acme": 0, "goededoel": 0, "other": 0}
        rows = ["acme,0612345678,consent,2020-01-01,,form-1", "goededoel,0612345681,customer,2015-01-01,,d"]
        await Loader(service.index).load(write_csv(tmp_path / "d.csv", rows), region="NL", replace=True)
        await service.refresh_generations()
        status, body = await get(service, "/readyz")
        ready = json.loads(body)
        detail = ready["checks"]["index"]["detail"]
        assert status == 200 and detail == "2 of 3 tenant(s) loaded; other (campaign other-sales): no data loaded"
        assert ready["tenants"]["acme"]["condition"] == "loaded" and ready["tenants"]["other"]["condition"] == "no-data"
        assert loaded() == {"acme": 1, "goededoel": 1, "other": 0}
        redis.stop()  # Redis unreachable: that is the whole instance, not one tenant
        status, body = await get(service, "/readyz")
        checks = json.loads(body)["checks"]
        assert status == 503 and checks["redis"]["ok"] is False and "unreachable" in checks["redis"]["detail"]
        assert (await get(service, "/healthz"))[0] == 200  # alive, just not ready
    finally:
        await service.stop()
        redis.stop()


async def test_ari_and_fastagi_in_one_service(redis_server: PrivateRedis, tmp_path: Path, ari: AriSimulator) -> None:
    service = await started(redis_server.url, tmp_path, ari)
    try:
        await asyncio.wait_for(ari.wait_connected(), 5)
        call = await ari.originate("0612345681", args=["0612345681", "donors"], caller="+31201234567")
        await asyncio.wait_for(call.wait_finished(), 5)
        assert call.variables["GATEKEEPER_RESULT"] == "ALLOW" and call.variables["GATEKEEPER_REASON"] == "customer"
        assert call.would_dial
        status, body = await get(service, "/readyz")
        assert status == 200 and json.loads(body)["checks"]["ari"]["ok"] is True
        text = (await get(service, "/metrics"))[1]
        assert "gatekeeper_ari_connected 1.0" in text
    finally:
        await service.stop()
    assert service.metrics.registry.get_sample_value("gatekeeper_ari_connected") == 0
