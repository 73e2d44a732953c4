"""deploy/ against the real thing: a real Prometheus scrapes a running gatekeeper while the FastAGI simulator
places calls (allowed, blocked, and fail-closed with Redis stopped); every query of the Grafana dashboard and
of the alert rules is then evaluated through Prometheus' HTTP API. promtool and systemd-analyze check the
shipped configuration and units.

Needs Debian's `prometheus` package (prometheus and promtool; `make test-deps` installs it). The test runs
its own Prometheus on a free loopback port with a temporary storage directory; it never uses the packaged
service or its port 9090.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import CollectorRegistry

from gatekeeper.compose import build_service
from gatekeeper.config import Settings
from gatekeeper.devservers import PrivateRedis, free_port
from gatekeeper.index.loader import Loader
from gatekeeper.log.outbox import Outbox
from gatekeeper.logs import DecisionLogger, LogCounter
from gatekeeper.service import Service
from gatekeeper.simulator.fastagi import SimChannel, run_session
from tests.conftest import make_settings, pinned, write_csv
from tests.interrupt import kill_import_at_switch

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "gatekeeper-dashboard.json"
RULES = DEPLOY / "prometheus" / "gatekeeper-rules.yml"
INSTALL = "apt-get install prometheus (or `make test-deps`)"
ROWS = [
    "acme,0612345678,consent,2020-01-01,,form-1",
    "acme,0612345680,consent,2020-01-01,,form-2",
    "acme,0612345680,objection,2021-01-01,,call",
    "goededoel,0612345681,customer,2015-01-01,,donor",
]
POOL = "+31201234567"
WAIT = 30.0  # seconds for anything Prometheus must see (scrapes every second)

# What each dashboard query returns: (panel title, refId) -> label names of every series.
DASHBOARD_LABELS: dict[tuple[str, str], frozenset[str]] = {
    ("Decisions per second by verdict", "A"): frozenset({"verdict"}),
    ("Blocks per second by reason", "A"): frozenset({"reason"}),
    ("Decision latency (p50, p99)", "A"): frozenset(),
    ("Decision latency (p50, p99)", "B"): frozenset(),
    ("Decision latency p99 by source", "A"): frozenset({"source"}),
    ("Fail-closed decisions per second", "A"): frozenset({"campaign"}),
    ("Index lookup errors by kind", "A"): frozenset({"kind"}),
    ("Index reachable", "A"): frozenset({"instance"}),
    ("Age of the last import", "A"): frozenset({"tenant"}),
    ("Index generation", "A"): frozenset({"tenant"}),
    ("Tenant data", "A"): frozenset({"tenant"}),
    ("Outbox backlog", "A"): frozenset({"instance"}),
    ("Shipper lag", "A"): frozenset({"instance"}),
    ("Warnings and errors logged", "A"): frozenset({"level", "logger"}),
    ("ARI connected", "A"): frozenset({"instance"}),
    ("ARI connected", "B"): frozenset({"instance"}),
    ("FastAGI sessions open", "A"): frozenset({"instance"}),
    ("FastAGI sessions per second by outcome", "A"): frozenset({"outcome"}),
    ("Instances", "A"): frozenset({"version"}),
    ("Instances", "B"): frozenset(),
    ("Decisions per second: $campaign", "A"): frozenset({"verdict"}),
    ("Blocks by reason in the time range: $campaign", "A"): frozenset({"reason"}),
    ("Block ratio: $campaign", "A"): frozenset(),
    ("Would block (monitor mode): $campaign", "A"): frozenset({"reason"}),
    ("Fail-closed decisions: $campaign", "A"): frozenset(),
}
# Series the calls of the test must have moved: (panel title, refId, campaign or None) -> labels of a series
# whose value must be > 0 (or, with `zero`, == 0).
MUST_BE_POSITIVE: list[tuple[str, str, str | None, dict[str, str]]] = [
    ("Decisions per second by verdict", "A", None, {"verdict": "allow"}),
    ("Decisions per second by verdict", "A", None, {"verdict": "block"}),
    ("Blocks per second by reason", "A", None, {"reason": "objection"}),
    ("Blocks per second by reason", "A", None, {"reason": "no-basis"}),
    ("Blocks per second by reason", "A", None, {"reason": "index-unavailable"}),
    ("Blocks per second by reason", "A", None, {"reason": "unknown-campaign"}),
    ("Decision latency (p50, p99)", "A", None, {}),
    ("Decision latency (p50, p99)", "B", None, {}),
    ("Decision latency p99 by source", "A", None, {"source": "fastagi"}),
    ("Fail-closed decisions per second", "A", None, {"campaign": "acme-sales"}),
    ("Index lookup errors by kind", "A", None, {"kind": "connection"}),
    ("Index generation", "A", None, {"tenant": "acme"}),
    ("Age of the last import", "A", None, {"tenant": "acme"}),
    ("FastAGI sessions per second by outcome", "A", None, {"outcome": "decided"}),
    ("Instances", "B", None, {}),
    ("Decisions per second: $campaign", "A", "acme-sales", {"verdict": "allow"}),
    ("Decisions per second: $campaign", "A", "acme-sales", {"verdict": "block"}),
    ("Blocks by reason in the time range: $campaign", "A", "acme-sales", {"reason": "objection"}),
    ("Block ratio: $campaign", "A", "acme-sales", {}),
    ("Would block (monitor mode): $campaign", "A", "acme-shadow", {"reason": "no-basis"}),
    ("Fail-closed decisions: $campaign", "A", "acme-sales", {}),
]
AGES = frozenset({"Age of the last import"})  # panels of `time() - <a time gatekeeper wrote>`
# Alert name -> label names of the series its condition compares (the expression before its threshold).
ALERT_LABELS: dict[str, frozenset[str]] = {
    "GatekeeperInstanceDown": frozenset({"instance", "job"}),
    "GatekeeperIndexUnavailable": frozenset({"instance"}),
    "GatekeeperIndexLookupErrors": frozenset({"instance", "kind"}),
    "GatekeeperFailClosedDecisions": frozenset({"instance", "campaign"}),
    "GatekeeperLatencyOverBudget": frozenset({"instance"}),
    "GatekeeperImportStale": frozenset({"tenant"}),
    "GatekeeperTenantWithoutData": frozenset({"tenant"}),
    "GatekeeperTenantSplit": frozenset({"tenant"}),
    "GatekeeperOutboxBacklogGrowing": frozenset({"instance", "job"}),
    "GatekeeperShipperLagging": frozenset({"instance"}),
    "GatekeeperAriDisconnected": frozenset({"instance"}),
    "GatekeeperFastAgiOverloaded": frozenset({"instance"}),
    "GatekeeperLoggingErrors": frozenset({"instance", "logger"}),
}
# With Redis stopped these conditions hold (and Prometheus' own rule evaluation has them pending or firing).
MUST_FIRE = ("GatekeeperIndexUnavailable", "GatekeeperIndexLookupErrors", "GatekeeperFailClosedDecisions")
# Tenant `other` has a campaign but no data was ever imported for it: that is a stale import too.
NEVER_IMPORTED = [{"tenant": "other"}]
# The tenant alerts hold for exactly these tenants: `other` has no data, and an import of `goededoel` is killed in
# its switch before the service starts (the instance stays ready; Prometheus' own evaluation has them pending).
TENANT_ALERTS = {
    "GatekeeperTenantWithoutData": [{"tenant": "other"}],
    "GatekeeperTenantSplit": [{"tenant": "goededoel"}],
}
# What the "Tenant data" panel shows per tenant: 0 loaded, 1 no data, 2 split.
TENANT_DATA = {"acme": 0.0, "goededoel": 2.0, "other": 1.0}
THRESHOLD = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*[-+]?[0-9.e]+\s*$")


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: {INSTALL}")
    return path


class PrivatePrometheus:
    """A prometheus server on 127.0.0.1 and a free port, storing into a temporary directory."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gatekeeper-prometheus-"))
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = self.dir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, session: aiohttp.ClientSession) -> PrivatePrometheus:
        args = [
            binary("prometheus"),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220
        deadline = time.monotonic() + WAIT
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{self.url}/-/ready") as response:
                    if response.status == 200:
                        return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start: {self.log.read_text()[-1500:]}")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class PromApi:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def get(self, path: str, **params: str) -> Any:
        async with self.session.get(f"{self.base}/api/v1/{path}", params=params) as response:
            body = await response.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.get("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        result: list[dict[str, Any]] = data["result"]
        return result

    async def until(self, expr: str, what: str) -> None:
        """Poll until `expr` returns a non-empty vector (bounded)."""
        deadline = time.monotonic() + WAIT
        while not await self.query(expr):
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus never saw {what} ({expr})")
            await asyncio.sleep(0.2)


def labels_of(sample: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in sample["metric"].items() if k != "__name__"}


def value_of(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


def substitute(expr: str, campaign: str) -> str:
    """What Grafana sends for the dashboard's variables."""
    for name, value in (
        ("$__rate_interval", "1m"),
        ("$__range", "5m"),
        ("$datasource", "prometheus"),
        ("$job", "gatekeeper"),
        ("$instance", ".*"),
        ("$campaign", campaign),
    ):
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def prometheus_config(http_port: int) -> dict[str, Any]:
    """The shipped scrape configuration, pointed at the test's gatekeeper, scraping every second."""
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {**config["global"], "scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    (job,) = config["scrape_configs"]
    job.update(scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": [f"127.0.0.1:{http_port}"]}])
    return config


def serving(settings: Settings, tmp_path: Path) -> Service:
    """`gatekeeper serve` as built for production, with its decision log and structured logging."""
    service = build_service(settings, registry=CollectorRegistry(), clock=pinned())
    assert any(isinstance(listener, DecisionLogger) for listener in service.gate.listeners)
    assert isinstance(service.gate.recorder, Outbox)
    assert any(c.name == "log" for c in service.components)
    return service


def channel(campaign: str, extension: str, *, callback: bool = False) -> SimChannel:
    query = f"?campaign={campaign}" + ("&callback=1" if callback else "")
    return SimChannel(
        url=f"agi://127.0.0.1:4573/check{query}",
        extension=extension,
        callerid_num=POOL,
        callingpres=0,
        variables={},
        functions={"CHANNEL(linkedid)": "1795860072.68"},
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def test_every_dashboard_and_alert_query_returns_data(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    redis = await asyncio.to_thread(PrivateRedis().start)
    settings = make_settings(
        redis.url, sections={"log": {"dsn": f"sqlite:///{tmp_path / 'decisions.db'}", "instance": "obs-1"}}
    )
    service = serving(settings, tmp_path)
    counter = LogCounter.install(service.metrics)
    prometheus: PrivatePrometheus | None = None
    try:
        await Loader(service.index).load(write_csv(tmp_path / "data.csv", ROWS), region="NL", replace=True)
        goededoel = write_csv(tmp_path / "goededoel.csv", ["goededoel,0612345681,customer,2015-01-01,,donor-2"])
        await kill_import_at_switch(settings, goededoel, "goededoel")
        await service.start()
        fastagi = next(c for c in service.components if c.name == "fastagi")
        port: int = fastagi.port  # type: ignore[attr-defined]

        async def call(campaign: str, extension: str, *, callback: bool = False) -> tuple[str, str]:
            result = await run_session("127.0.0.1", port, channel=channel(campaign, extension, callback=callback))
            return result.variables["GATEKEEPER_RESULT"], result.variables["GATEKEEPER_REASON"]

        prometheus = await PrivatePrometheus(prometheus_config(service.http_port)).start(http)
        api = PromApi(http, prometheus.url)
        # The pre-initialised series are scraped at zero before any call, so every rate sees the calls.
        await api.until('gatekeeper_decisions_total{job="gatekeeper"}', "the first scrape")

        assert await call("acme-sales", "0612345678", callback=True) == ("ALLOW", "consent")
        assert await call("acme-sales", "0612345678", callback=True) == ("ALLOW", "consent")
        assert await call("acme-sales", "0612345680") == ("BLOCK", "objection")
        assert await call("acme-sales", "0612345699") == ("BLOCK", "no-basis")
        assert await call("acme-shadow", "0612345699") == ("ALLOW", "no-basis")  # monitor mode: would block
        assert await call("spam-blast", "0612345678") == ("BLOCK", "unknown-campaign")
        await api.until('sum(gatekeeper_decisions_total{job="gatekeeper"}) >= 6', "the calls")

        await asyncio.to_thread(redis.stop)
        for _ in range(3):
            assert await call("acme-sales", "0612345678", callback=True) == ("BLOCK", "index-unavailable")
        await api.until('sum(gatekeeper_fail_closed_decisions_total{job="gatekeeper"}) >= 3', "the fail-closed calls")
        await api.until('count_over_time(gatekeeper_index_up{job="gatekeeper"}[1m]) >= 3', "a few scrapes")

        problems = await check_dashboard(api) + await check_alerts(api)
        assert problems == [], "\n".join(problems)
    finally:
        if prometheus is not None:
            prometheus.stop()
        await service.stop()
        counter.remove()
        await asyncio.to_thread(redis.stop)


async def check_dashboard(api: PromApi) -> list[str]:
    """Every panel query and variable query of the dashboard; returns what is wrong."""
    board = json.loads(DASHBOARD.read_text())
    problems: list[str] = []
    results: dict[tuple[str, str, str | None], list[dict[str, Any]]] = {}
    panels = [(p["title"], t) for p in board["panels"] for t in p.get("targets", [])]
    assert {(title, t["refId"]) for title, t in panels} == set(DASHBOARD_LABELS), "update DASHBOARD_LABELS"
    for title, target in panels:
        campaigns: tuple[str | None, ...] = ("acme-sales", "acme-shadow") if "$campaign" in target["expr"] else (None,)
        for campaign in campaigns:
            expr = substitute(target["expr"], campaign or "")
            vector = await api.query(expr)
            results[(title, target["refId"], campaign)] = vector
            expected = DASHBOARD_LABELS[(title, target["refId"])]
            if not vector:
                problems.append(f"{title} {target['refId']} ({campaign}): no data for {expr}")
            for sample in vector:
                if set(labels_of(sample)) != expected:
                    problems.append(
                        f"{title} {target['refId']}: labels {sorted(labels_of(sample))} != {sorted(expected)}"
                    )
    # Ages compare Prometheus' clock with times gatekeeper wrote. Under scripts/at-time only the Python
    # processes see the moved clock, Prometheus the real one: correct by the difference of the two clocks.
    skew = time.time() - value_of((await api.query("vector(time())"))[0])
    for title, ref, campaign, match in MUST_BE_POSITIVE:
        vector = results[(title, ref, campaign)]
        chosen = [s for s in vector if all(labels_of(s).get(k) == v for k, v in match.items())]
        values = [value_of(s) + (skew if title in AGES else 0.0) for s in chosen]
        if not values or not all(v > 0 and not math.isnan(v) for v in values):
            problems.append(f"{title} {ref} ({campaign}) {match}: expected a positive value, got {values}")
    index_up = [value_of(s) for s in results[("Index reachable", "A", None)]]
    if index_up != [0.0]:
        problems.append(f"Index reachable: expected 0 with Redis stopped, got {index_up}")
    tenants = {labels_of(s)["tenant"]: value_of(s) for s in results[("Tenant data", "A", None)]}
    if tenants != TENANT_DATA:
        problems.append(f"Tenant data: {tenants}, expected {TENANT_DATA}")
    ratio = [value_of(s) for s in results[("Block ratio: $campaign", "A", "acme-sales")]]
    if not (len(ratio) == 1 and 0 < ratio[0] < 1):
        problems.append(f"Block ratio for acme-sales: {ratio}")
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
        assert found is not None, variable["query"]["query"]
        selector, label = substitute(found.group(1), ""), found.group(2)
        values = await api.get(f"label/{label}/values", **{"match[]": selector})
        wanted = {"campaign": "acme-sales", "instance": "127.0.0.1:"}[label]
        if not any(str(v).startswith(wanted) for v in values):
            problems.append(f"variable {variable['name']}: {values} lacks {wanted}")
    return problems


async def check_alerts(api: PromApi) -> list[str]:
    """Every alert expression (and the series it compares), and Prometheus' own evaluation of the rules."""
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == set(ALERT_LABELS), "update ALERT_LABELS"
    problems: list[str] = []
    for rule in rules:
        name, expr = rule["alert"], rule["expr"]
        firing = await api.query(expr)
        signal_expr = THRESHOLD.sub("", expr)
        assert signal_expr != expr, f"{name}: no trailing threshold to strip"
        signal = await api.query(signal_expr)
        if not signal:
            problems.append(f"{name}: no data for {signal_expr}")
        for sample in signal + firing:
            if set(labels_of(sample)) != ALERT_LABELS[name]:
                problems.append(f"{name}: labels {sorted(labels_of(sample))} != {sorted(ALERT_LABELS[name])}")
        if name in MUST_FIRE and not firing:
            problems.append(f"{name}: should hold with Redis stopped: {expr}")
        if name == "GatekeeperImportStale" and [labels_of(s) for s in firing] != NEVER_IMPORTED:
            problems.append(f"{name}: should hold for the tenant never imported only: {firing}")
        elif name in TENANT_ALERTS and [labels_of(s) for s in firing] != TENANT_ALERTS[name]:
            problems.append(f"{name}: should hold for {TENANT_ALERTS[name]} only: {firing}")
        elif (
            name not in (*MUST_FIRE, *TENANT_ALERTS, "GatekeeperImportStale", "GatekeeperLatencyOverBudget") and firing
        ):
            problems.append(f"{name}: holds but should not: {firing}")
    groups = (await api.get("rules"))["groups"]
    evaluated = {r["name"]: r for g in groups for r in g["rules"]}
    if set(evaluated) != set(ALERT_LABELS):
        problems.append(f"Prometheus loaded {sorted(evaluated)}")
    for name, rule in evaluated.items():
        if rule["health"] != "ok" or rule.get("lastError"):
            problems.append(f"{name}: rule health {rule['health']} {rule.get('lastError')}")
    deadline = time.monotonic() + WAIT
    while True:
        active = {a["labels"]["alertname"] for a in (await api.get("alerts"))["alerts"]}
        if {*MUST_FIRE, *TENANT_ALERTS} <= active or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    if not {*MUST_FIRE, *TENANT_ALERTS} <= active:
        expected = sorted({*MUST_FIRE, *TENANT_ALERTS})
        problems.append(f"Prometheus' own evaluation: pending or firing {sorted(active)}, expected {expected}")
    return problems


# -- static tools --------------------------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_rules_and_the_scrape_configs() -> None:
    promtool = binary("promtool")
    rules = run(promtool, "check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 13 rules found" in rules.stdout
    for config in ("prometheus.yml", "prometheus-compose.yml"):
        checked = run(promtool, "check", "config", str(DEPLOY / "prometheus" / config))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "is valid prometheus config file syntax" in checked.stdout


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    """`systemd-analyze verify` on copies whose ExecStart points at this checkout's gatekeeper (the units
    name /opt/gatekeeper/bin/gatekeeper, which verify requires to exist)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is part of Debian's systemd package"
    gatekeeper = Path(sys.executable).with_name("gatekeeper")
    assert gatekeeper.is_file(), gatekeeper
    units = []
    for source in sorted((DEPLOY / "systemd").glob("gatekeeper*.[st]*")):
        if source.suffix not in (".service", ".timer"):
            continue
        target = tmp_path / source.name
        target.write_text(source.read_text().replace("/opt/gatekeeper/bin/gatekeeper", str(gatekeeper)))
        units.append(str(target))
    assert len(units) == 6  # three services, two timers, the shipper service
    verified = run(analyze, "verify", "--man=no", *units)
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr
    for unit in units:
        if not unit.endswith(".service"):
            continue
        security = run(analyze, "security", "--offline=yes", unit)
        exposure = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout + security.stderr)
        assert exposure is not None, security.stdout + security.stderr
        assert float(exposure.group(1)) <= 2.0, (unit, exposure.group(0))
