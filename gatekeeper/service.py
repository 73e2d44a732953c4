"""`gatekeeper serve`: FastAGI, ARI and HTTP (health, readiness, metrics, API, UI) in one asyncio process."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from gatekeeper.config import Settings
from gatekeeper.gate import Gate
from gatekeeper.index.health import TenantCondition, TenantHealth, tenant_health
from gatekeeper.index.store import ConsentIndex, is_unavailable
from gatekeeper.logs import LogCounter
from gatekeeper.metrics import Metrics

log = logging.getLogger(__name__)
ADAPTERS = frozenset({"fastagi", "ari"})  # components that take calls: stopped first
READINESS_BUDGET = 0.5  # seconds for all readiness checks together
GENERATION_REFRESH = 5.0  # seconds between refreshes of the per-tenant generation gauges


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str


class Component(Protocol):
    """A long-running part of the service (FastAGI server, ARI application, decision log shipper)."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def readiness(self) -> Check: ...


ReadinessCheck = Callable[[], Awaitable[Check]]


class Service:
    """The running process: its components' lifecycle, health, readiness and metrics over HTTP.

    Built by the composition root (`gatekeeper.compose.build_service`), which makes the gate with its
    recorder and listeners and adds the components the configuration asks for.
    """

    def __init__(self, settings: Settings, *, metrics: Metrics, index: ConsentIndex, gate: Gate) -> None:
        self.settings = settings
        self.metrics = metrics
        self.index = index
        self.gate = gate
        self.components: list[Component] = []
        self.checks: dict[str, ReadinessCheck] = {"redis": self._check_redis, "index": self._check_index}
        self.web = web.Application(client_max_size=1 << 20)
        self.web.router.add_get("/healthz", self._healthz)
        self.web.router.add_get("/readyz", self._readyz)
        self.web.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._tenant_health: dict[str, TenantHealth] | None = None  # configured tenants, as last read
        self._stopping = asyncio.Event()
        self._log_counter: LogCounter | None = None
        self._stopped = False
        self.started_at = time.time()

    def add(self, component: Component) -> None:
        self.components.append(component)
        self.checks[component.name] = component.readiness

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._log_counter = LogCounter.install(self.metrics)
        try:
            await self.refresh_generations(scripts=True)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self.metrics.index_reachable(False)
            log.warning("the consent index is unavailable at start-up; calls fail closed until it returns")
        self._tasks.append(asyncio.create_task(self._refresh_loop(), name="generations"))
        for component in self.components:
            await component.start()
        self._runner = web.AppRunner(self.web, access_log=None, handle_signals=False)
        await self._runner.setup()
        listen = self.settings.http.listen
        self._site = web.TCPSite(self._runner, listen.host, listen.port, reuse_address=True)
        await self._site.start()
        log.info("HTTP listening on %s", listen)

    @property
    def http_port(self) -> int:
        """The bound HTTP port (useful with port 0 in tests)."""
        assert self._runner is not None, "not started"
        return int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Graceful: the adapters stop taking calls and finish theirs (each decision's record is kept before
        its verdict goes out), the log components ship and stop, then HTTP closes."""
        if self._stopped:
            return
        self._stopped = True
        adapters = [c for c in self.components if c.name in ADAPTERS]
        others = [c for c in self.components if c.name not in ADAPTERS]
        for component in [*reversed(adapters), *reversed(others)]:
            try:
                await component.stop()
            except Exception:
                log.exception("stopping %s failed", component.name)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.index.close()
        if self._log_counter is not None:
            self._log_counter.remove()
            self._log_counter = None

    async def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop gracefully."""
        await self.start()
        # What start-up allocated (modules, settings, tables) lives as long as the process: take it out of
        # the collector's generations, so that a full collection during a call scans only what calls made.
        gc.freeze()
        try:
            await self.wait_for_stop_signal()
        finally:
            await self.stop()

    async def wait_for_stop_signal(self) -> None:
        """Return on SIGTERM or SIGINT (or `request_stop`)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        await self._stopping.wait()
        log.info("stopping: finishing the calls in flight")

    def request_stop(self) -> None:
        self._stopping.set()

    # -- index generations ---------------------------------------------------------------------------

    async def refresh_generations(self, *, scripts: bool = False) -> None:
        """Read every tenant's generation and health: the lookups' cache, the readiness detail, the gauges.

        `scripts`: also load the Lua scripts (at start-up; later, a call that meets NOSCRIPT loads them).
        """
        tenants = await self.index.warm(scripts=scripts)
        self.metrics.index_reachable(True)
        health = await tenant_health(self.index, self.settings.tenants, infos=tenants)
        earlier = self._tenant_health or {}
        self._tenant_health = {name: health[name] for name in sorted(self.settings.tenants)}
        for name, now in self._tenant_health.items():
            condition = now.condition
            self.metrics.tenant_state(name, loaded=now.info is not None, split=condition is TenantCondition.SPLIT)
            before = earlier.get(name)
            if condition in (TenantCondition.SPLIT, TenantCondition.NO_DATA) and (
                before is None or before.condition is not condition
            ):
                log.warning("tenant %s: %s", name, now.describe())
        for name, info in tenants.items():
            self.metrics.index_generation.labels(name).set(info.generation)
            try:
                stamp = dt.datetime.fromisoformat(info.imported_at).timestamp()
            except ValueError:
                continue
            self.metrics.index_import_time.labels(name).set(stamp)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(GENERATION_REFRESH)
            try:
                await self.refresh_generations()
            except Exception as exc:
                if is_unavailable(exc):
                    self.metrics.index_reachable(False)
                else:
                    log.exception("refreshing the index generations failed")

    # -- HTTP ----------------------------------------------------------------------------------------

    async def _check_redis(self) -> Check:
        try:
            async with asyncio.timeout(self.settings.index.timeout * 4):
                await self.index.ping()
        except Exception as exc:
            self.metrics.index_reachable(False)
            return Check(False, f"Redis at {self.settings.index.redacted_url} unreachable: {type(exc).__name__}")
        self.metrics.index_reachable(True)
        return Check(True, "reachable")

    async def _check_index(self) -> Check:
        """Ready once the tenants' generations were read. A tenant without data, or split by an interrupted
        import, is named here (and in the body's `tenants`, and the metrics) but does not make the instance
        unready: the other tenants' calls are decided as usual, and that tenant's calls are decided on what
        the index holds for them (no data: no basis, so blocked)."""
        health = self._tenant_health
        if health is None:
            return Check(False, "tenant generations not read yet")
        loaded = sum(1 for t in health.values() if t.info is not None)
        campaigns = self._campaigns_by_tenant()
        problems = [
            f"{name} ({'campaign' if len(campaigns[name]) == 1 else 'campaigns'} {', '.join(campaigns[name])}): "
            f"{tenant.describe()}"
            for name, tenant in health.items()
            if tenant.condition is not TenantCondition.LOADED
        ]
        return Check(True, "; ".join([f"{loaded} of {len(health)} tenant(s) loaded", *problems]))

    def _campaigns_by_tenant(self) -> dict[str, list[str]]:
        campaigns: dict[str, list[str]] = {}
        for campaign in sorted(self.settings.campaigns.values(), key=lambda c: c.id):
            campaigns.setdefault(campaign.tenant, []).append(campaign.id)
        return campaigns

    def tenants(self) -> dict[str, dict[str, Any]]:
        """The configured tenants as last read, for the /readyz body."""
        campaigns = self._campaigns_by_tenant()
        return {
            name: {
                "condition": tenant.condition.value,
                "generation": tenant.generation,
                "campaigns": campaigns[name],
                "detail": tenant.describe(),
            }
            for name, tenant in (self._tenant_health or {}).items()
        }

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "uptime_seconds": round(time.time() - self.started_at, 1)})

    async def readiness(self) -> dict[str, Check]:
        names = list(self.checks)

        async def run(name: str) -> Check:
            try:
                async with asyncio.timeout(READINESS_BUDGET):
                    return await self.checks[name]()
            except TimeoutError:
                return Check(False, "check timed out")
            except Exception as exc:
                return Check(False, f"check failed: {type(exc).__name__}")

        results = dict(zip(names, await asyncio.gather(*(run(n) for n in names)), strict=True))
        if self._stopping.is_set():
            results["service"] = Check(False, "stopping: finishing the calls in flight")
        return results

    async def _readyz(self, request: web.Request) -> web.Response:
        results = await self.readiness()
        ready = all(c.ok for c in results.values())
        body = {
            "ready": ready,
            "checks": {n: {"ok": c.ok, "detail": c.detail} for n, c in results.items()},
            "tenants": self.tenants(),
        }
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
