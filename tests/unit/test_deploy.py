"""deploy/ read statically: every file parses, refers to what exists, and asks for what gatekeeper has.

The live checks (a real Prometheus evaluating every query, promtool, systemd-analyze) are in
tests/integration/test_observability.py.
"""

from __future__ import annotations

import argparse
import configparser
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gatekeeper.config import ConfigError, load
from gatekeeper.index.connect import Topology, parse_redis_url
from gatekeeper.log.commands import add_log_parser
from gatekeeper.logs import add_arguments
from gatekeeper.metrics import Metrics
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "gatekeeper-dashboard.json"
RULES = DEPLOY / "prometheus" / "gatekeeper-rules.yml"
COMPOSE = DEPLOY / "compose.yaml"
SYSTEMD = DEPLOY / "systemd"
METRIC_NAME = re.compile(r"\b(gatekeeper_[a-z_]+)\b")
# The alerts issue 5 asks for, and the rule that answers each.
REQUIRED_ALERTS = {
    "index unavailable": "GatekeeperIndexUnavailable",
    "fail-closed decisions": "GatekeeperFailClosedDecisions",
    "latency over budget": "GatekeeperLatencyOverBudget",
    "stale import": "GatekeeperImportStale",
    "outbox backlog growing": "GatekeeperOutboxBacklogGrowing",
    "ARI disconnected": "GatekeeperAriDisconnected",
    "instance down": "GatekeeperInstanceDown",
    "tenant without data (issue 8)": "GatekeeperTenantWithoutData",
    "tenant split by an interrupted import (issue 9)": "GatekeeperTenantSplit",
}
SANDBOX = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "LoadCredential": "pepper:/etc/gatekeeper/pepper",
    "User": "gatekeeper",
    "StateDirectory": "gatekeeper",
    "UMask": "0077",
}


def series_names() -> set[str]:
    """Every series name a gatekeeper exposes (histograms with their _bucket, _sum and _count)."""
    registry = CollectorRegistry()
    Metrics(make_settings("redis://127.0.0.1:1/0"), registry)
    return {s.name for family in registry.collect() for s in family.samples}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in board["panels"] for t in p.get("targets", [])]


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",), comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_dashboard_queries_only_what_gatekeeper_exposes() -> None:
    known = series_names() | {"up"}
    board = dashboard()
    exprs = [t["expr"] for _, t in targets(board)]
    exprs += [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert used <= known, used - known
    assert {name for name in used if not name.endswith(("_bucket", "_count", "_sum"))} >= {
        "gatekeeper_decisions_total",
        "gatekeeper_fail_closed_decisions_total",
        "gatekeeper_index_last_import_timestamp_seconds",
        "gatekeeper_outbox_backlog",
        "gatekeeper_ari_connected",
        "gatekeeper_fastagi_sessions_open",
        "gatekeeper_index_tenant_loaded",
        "gatekeeper_index_tenant_split",
    }


def test_dashboard_structure() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"datasource", "job", "instance", "campaign"}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["campaign"]["multi"] and variables["campaign"]["includeAll"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        x, w = panel["gridPos"]["x"], panel["gridPos"]["w"]
        assert x >= 0 and x + w <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
    repeated = [p for p in board["panels"] if p.get("repeat") == "campaign"]
    assert len(repeated) == 1
    per_campaign = [t["expr"] for title, t in targets(board) if "$campaign" in title]
    assert len(per_campaign) >= 4 and all('campaign=~"$campaign"' in e for e in per_campaign)
    for title, target in targets(board):
        assert 'job="$job"' in target["expr"] and 'instance=~"$instance"' in target["expr"], title
    titles = " | ".join(p["title"].lower() for p in board["panels"])
    for wanted in ("by verdict", "by reason", "latency", "fail-closed", "age of the last import", "outbox", "ari",
                   "fastagi", "tenant data"):  # fmt: skip
        assert wanted in titles, wanted


def test_alert_rules_cover_the_issue_and_carry_runbooks() -> None:
    known = series_names() | {"up"}
    found = {rule["alert"]: rule for rule in rules()}
    assert len(found) == len(rules())
    assert set(REQUIRED_ALERTS.values()) <= set(found)
    for name, rule in found.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(annotations), name
        assert len(annotations["runbook"]) > 150, name
        assert set(METRIC_NAME.findall(rule["expr"])) <= known, name
        assert 'job="gatekeeper"' in rule["expr"], name
        assert re.fullmatch(r"\d+[sm]", rule["for"]), name


def test_prometheus_configs_scrape_the_gatekeeper_job() -> None:
    for name in ("prometheus.yml", "prometheus-compose.yml"):
        config = yaml.safe_load((DEPLOY / "prometheus" / name).read_text())
        assert config["rule_files"] == ["gatekeeper-rules.yml"]
        (job,) = config["scrape_configs"]
        assert job["job_name"] == "gatekeeper" and job["metrics_path"] == "/metrics"
    compose_job = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-compose.yml").read_text())["scrape_configs"][0]
    assert compose_job["static_configs"][0]["targets"] == ["gatekeeper:8080"]


def test_compose_brings_up_the_whole_chain_from_files_in_the_repository() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"asterisk", "redis", "postgres", "prometheus", "grafana", "gatekeeper"} <= set(services)
    base = COMPOSE.parent
    referenced: list[Path] = []
    for service in services.values():
        build = service.get("build")
        if build is not None:
            context = (base / build["context"]).resolve()
            referenced += [context, context / build["dockerfile"]]
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                referenced.append((base / source).resolve())
            else:
                assert source in compose["volumes"], source  # a named volume, declared
    referenced += [(base / s["file"]).resolve() for s in compose["secrets"].values()]
    missing = [str(p) for p in referenced if not p.exists()]
    assert missing == []
    mounted = {Path(v.split(":")[0]).name for v in services["asterisk"]["volumes"]}
    assert mounted == {"extensions.conf", "ari.conf", "http.conf"}
    assert all("asterisk-config" in v for v in services["asterisk"]["volumes"])
    assert services["asterisk"]["network_mode"] == "service:gatekeeper"
    assert services["prometheus"]["command"][0] == "--config.file=/etc/prometheus/prometheus-compose.yml"


def test_compose_configuration_is_valid() -> None:
    settings = load(DEPLOY / "compose" / "gatekeeper.toml", env={"GATEKEEPER_PEPPER": "x" * 24})
    assert settings.http.listen.port == 8080 and settings.fastagi.listen.port == 4573
    assert settings.ari is not None and settings.ari.url == "http://127.0.0.1:8088"
    assert set(settings.campaigns) >= {"acme-sales", "acme-shadow", "goededoel-donors"}
    assert settings.log.dsn.startswith("postgresql://") and "@postgres:5432/" in settings.log.dsn


def test_systemd_units_are_sandboxed_and_run_real_commands() -> None:
    services = sorted(SYSTEMD.glob("*.service"))
    assert [p.name for p in services] == [
        "gatekeeper-log-purge.service",
        "gatekeeper-log-ship.service",
        "gatekeeper-log-shipper.service",
        "gatekeeper.service",
    ]
    parser = argparse.ArgumentParser(prog="gatekeeper")
    add_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve")
    add_log_parser(sub)
    commands = {}
    for path in services:
        section = unit(path)["Service"]
        for key, value in SANDBOX.items():
            assert section.get(key) == value, (path.name, key)
        assert "@system-service" in path.read_text() and "~@privileged @resources" in path.read_text()
        argv = shlex.split(section["ExecStart"])
        assert argv[0] == "/opt/gatekeeper/bin/gatekeeper"
        args = parser.parse_args(argv[1:])
        assert args.log_format == "json"
        commands[path.name] = argv[3:]
    assert commands == {
        "gatekeeper.service": ["serve"],
        "gatekeeper-log-ship.service": ["log", "ship", "--once"],
        "gatekeeper-log-shipper.service": ["log", "ship"],
        "gatekeeper-log-purge.service": ["log", "purge"],
    }
    assert unit(SYSTEMD / "gatekeeper.service")["Service"]["Type"] == "exec"
    assert unit(SYSTEMD / "gatekeeper-log-shipper.service")["Service"]["Type"] == "exec"
    for name in ("gatekeeper-log-ship", "gatekeeper-log-purge"):
        assert unit(SYSTEMD / f"{name}.service")["Service"]["Type"] == "oneshot"
        timer = unit(SYSTEMD / f"{name}.timer")
        assert timer["Timer"]["Unit"] == f"{name}.service"
        assert timer["Install"]["WantedBy"] == "timers.target"
    assert "u gatekeeper " in (SYSTEMD / "gatekeeper.sysusers.conf").read_text()


def test_sentinel_sample_names_the_service_gatekeepers_url_uses() -> None:
    directives = [
        line.split() for line in (DEPLOY / "redis" / "sentinel.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    monitor = next(d for d in directives if d[:2] == ["sentinel", "monitor"])
    assert monitor[2] == "gatekeeper" and monitor[5] == "2"  # the service name and a quorum of two
    assert ["sentinel", "down-after-milliseconds", "gatekeeper", "5000"] in directives
    url = re.search(r"redis\+sentinel://\S+", (DEPLOY / "redis" / "sentinel.conf").read_text())
    assert url is not None
    target = parse_redis_url(url.group(0).rstrip('"'))
    assert target.topology is Topology.SENTINEL and target.service == "gatekeeper" and len(target.nodes) == 3
    data = (DEPLOY / "redis" / "redis-primary.conf").read_text()
    assert "maxmemory-policy noeviction" in data and "appendonly yes" in data


@pytest.mark.parametrize(
    ("url", "nodes", "service", "db", "password", "sentinel_password"),
    [
        ("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/gk", (("10.0.0.1", 26379), ("10.0.0.2", 26379)), "gk", 0,
         None, None),
        ("redis+sentinel://:s3cret@[::1]:26380,h2/gk/3?sentinel_password=sp", (("::1", 26380), ("h2", 26379)), "gk",
         3, "s3cret", "sp"),
        ("redis+sentinel://h1:1/gk?password=pw", (("h1", 1),), "gk", 0, "pw", None),
        ("redis+cluster://:pw@n1:7000,n2:7001", (("n1", 7000), ("n2", 7001)), "", 0, "pw", None),
        ("redis+cluster://n1", (("n1", 6379),), "", 0, None, None),
    ],
)  # fmt: skip
def test_cluster_and_sentinel_urls(
    url: str, nodes: tuple[tuple[str, int], ...], service: str, db: int, password: str | None,
    sentinel_password: str | None,
) -> None:  # fmt: skip
    target = parse_redis_url(url)
    assert (target.nodes, target.service, target.db) == (nodes, service, db)
    assert (target.password, target.sentinel_password) == (password, sentinel_password)
    assert "s3cret" not in repr(target) and "pw" not in repr(target).replace("password", "")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://h1:26379", "service"),
        ("redis+sentinel://h1:26379/gk/x", "not a number"),
        ("redis+cluster://h1:7000/1", "no databases"),
        ("redis+cluster://h1:port", "host:port"),
        ("redis+cluster://", "no host"),
        ("redis+cluster://h1?tls=1", "unknown option"),
        ("memcached://h1", "unsupported scheme"),
        ("redis+sentinel://:secret@h1:70000/gk", "out of range"),
    ],
)
def test_malformed_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_redis_url(url)
    assert "secret" not in str(caught.value)
