"""The metric set is public interface (dashboards and alerts query it): names, types and labels pinned here.

Also: every label value is pre-initialised, so series exist before the first call, and no label ever
carries a telephone number, a channel or a call id, whatever reaches the gate.
"""

from __future__ import annotations

import itertools
import logging
import math
import re

import pytest
from prometheus_client import CollectorRegistry

from gatekeeper import __version__
from gatekeeper.config import Settings
from gatekeeper.contract import IndexFailure, SessionOutcome
from gatekeeper.core.model import Reason, Verdict
from gatekeeper.metrics import (
    FASTAGI_OUTCOMES,
    INDEX_ERROR_KINDS,
    LATENCY_BUCKETS,
    LOG_LEVELS,
    LOG_SOURCES,
    SOURCES,
    UNKNOWN_CAMPAIGN,
    Metrics,
    log_source,
)
from gatekeeper.record import DecisionRecord, new_decision_id
from tests.conftest import make_record, make_settings

# Exposed series name (as Prometheus stores it) -> (type, label names). Histograms also expose
# `_bucket` (with `le`), `_sum` and `_count`; counters and histograms `_created`.
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "gatekeeper_decisions_total": ("counter", frozenset({"verdict", "reason", "campaign"})),
    "gatekeeper_would_block_total": ("counter", frozenset({"reason", "campaign"})),
    "gatekeeper_decision_duration_seconds": ("histogram", frozenset({"source"})),
    "gatekeeper_index_errors_total": ("counter", frozenset({"kind"})),
    "gatekeeper_fail_closed_decisions_total": ("counter", frozenset({"campaign"})),
    "gatekeeper_fastagi_sessions_open": ("gauge", frozenset()),
    "gatekeeper_fastagi_sessions_total": ("counter", frozenset({"outcome"})),
    "gatekeeper_ari_connected": ("gauge", frozenset()),
    "gatekeeper_ari_configured": ("gauge", frozenset()),
    "gatekeeper_index_up": ("gauge", frozenset()),
    "gatekeeper_index_generation": ("gauge", frozenset({"tenant"})),
    "gatekeeper_index_last_import_timestamp_seconds": ("gauge", frozenset({"tenant"})),
    "gatekeeper_index_tenant_loaded": ("gauge", frozenset({"tenant"})),
    "gatekeeper_index_tenant_split": ("gauge", frozenset({"tenant"})),
    "gatekeeper_outbox_backlog": ("gauge", frozenset()),
    "gatekeeper_shipper_lag_seconds": ("gauge", frozenset()),
    "gatekeeper_log_messages_total": ("counter", frozenset({"level", "logger"})),
    "gatekeeper_build_info": ("info", frozenset({"version"})),
}
SUFFIX = {"counter": "_total", "info": "_info"}
NUMBER_LIKE = re.compile(r"\d{6,}|\+")
DIALLED = ("+31612345678", "0612345678", "0031612345678", "612345678")
UNIQUEID = "1795860072.69"
CHANNEL = "PJSIP/0612345678-0000002a"


def exposed(registry: CollectorRegistry) -> dict[str, tuple[str, frozenset[str]]]:
    """What a scrape shows: series name -> (type, label names)."""
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for family in registry.collect():
        labels = {name for s in family.samples for name in s.labels if name != "le"}
        found[family.name + SUFFIX.get(family.type, "")] = (family.type, frozenset(labels))
    return found


def samples(registry: CollectorRegistry, name: str) -> list[dict[str, str]]:
    return [s.labels for f in registry.collect() for s in f.samples if s.name == name]


@pytest.fixture
def settings() -> Settings:
    return make_settings("redis://127.0.0.1:1/0")  # parsed only: nothing connects


@pytest.fixture
def metrics(settings: Settings) -> Metrics:
    return Metrics(settings, CollectorRegistry())


def decision_for(
    *,
    dialled: str,
    campaign: str,
    verdict: Verdict,
    reason: Reason,
    would_block: bool = False,
    source: str = "fastagi",
    index_error: str | None = None,
) -> DecisionRecord:
    """A decision record as the gate hands it to its listeners, with a number and call ids in every field."""
    return make_record(
        decision_id=new_decision_id(1.0),
        campaign=campaign,
        tenant=None,
        verdict=verdict,
        reason=reason,
        would_block=would_block,
        explanation=f"explained for {dialled}",
        rule=2 if reason is Reason.UNKNOWN_CAMPAIGN else 10,
        uniqueid=UNIQUEID,
        linkedid=CHANNEL,
        source=source,
        latency_us=400,
        index_error=index_error,
    )


def test_names_types_and_labels_are_pinned(metrics: Metrics) -> None:
    assert exposed(metrics.registry) == METRICS


def test_every_label_value_exists_before_the_first_call(metrics: Metrics, settings: Settings) -> None:
    campaigns = {*settings.campaigns, UNKNOWN_CAMPAIGN}
    decisions = samples(metrics.registry, "gatekeeper_decisions_total")
    assert {(d["verdict"], d["reason"], d["campaign"]) for d in decisions} == set(
        itertools.product((v.value for v in Verdict), (r.value for r in Reason), campaigns)
    )
    would_block = samples(metrics.registry, "gatekeeper_would_block_total")
    assert {(d["reason"], d["campaign"]) for d in would_block} == set(
        itertools.product((r.value for r in Reason), campaigns)
    )
    assert {d["campaign"] for d in samples(metrics.registry, "gatekeeper_fail_closed_decisions_total")} == campaigns
    assert {d["kind"] for d in samples(metrics.registry, "gatekeeper_index_errors_total")} == set(INDEX_ERROR_KINDS)
    assert {d["source"] for d in samples(metrics.registry, "gatekeeper_decision_duration_seconds_count")} == set(
        SOURCES
    )
    assert {d["outcome"] for d in samples(metrics.registry, "gatekeeper_fastagi_sessions_total")} == set(SessionOutcome)
    logs = samples(metrics.registry, "gatekeeper_log_messages_total")
    assert {(d["level"], d["logger"]) for d in logs} == set(itertools.product(LOG_LEVELS, LOG_SOURCES))
    tenants = {d["tenant"] for d in samples(metrics.registry, "gatekeeper_index_generation")}
    assert tenants == settings.tenants == {"acme", "goededoel", "other"}
    assert {d["tenant"] for d in samples(metrics.registry, "gatekeeper_index_last_import_timestamp_seconds")} == tenants
    assert {d["tenant"] for d in samples(metrics.registry, "gatekeeper_index_tenant_loaded")} == tenants
    assert {d["tenant"] for d in samples(metrics.registry, "gatekeeper_index_tenant_split")} == tenants
    get = metrics.registry.get_sample_value
    assert get("gatekeeper_decisions_total", {"verdict": "block", "reason": "objection", "campaign": "donors"}) == 0
    assert get("gatekeeper_fastagi_sessions_open") == 0
    assert get("gatekeeper_ari_connected") == 0
    assert get("gatekeeper_ari_configured") == 0  # no [ari] section
    assert math.isnan(get("gatekeeper_index_up") or 0.0)  # not asked yet: neither up nor down
    assert math.isnan(get("gatekeeper_index_tenant_loaded", {"tenant": "acme"}) or 0.0)  # not read yet
    assert get("gatekeeper_index_tenant_split", {"tenant": "acme"}) == 0
    assert samples(metrics.registry, "gatekeeper_build_info") == [{"version": __version__}]


def test_fastagi_outcomes_are_the_contract() -> None:
    assert tuple(SessionOutcome) == FASTAGI_OUTCOMES


def test_latency_buckets_span_50_microseconds_to_a_second(metrics: Metrics) -> None:
    assert LATENCY_BUCKETS[0] == 0.00005 and LATENCY_BUCKETS[-1] == 1.0
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)
    bounds = [d["le"] for d in samples(metrics.registry, "gatekeeper_decision_duration_seconds_bucket")]
    assert {"5e-05", "1.0", "+Inf"} <= set(bounds)


def test_ari_configured_follows_the_settings() -> None:
    settings = make_settings(
        "redis://127.0.0.1:1/0", sections={"ari": {"url": "http://127.0.0.1:8088", "username": "gk", "password": "pw"}}
    )
    assert Metrics(settings, CollectorRegistry()).registry.get_sample_value("gatekeeper_ari_configured") == 1


def test_no_label_ever_carries_a_number(metrics: Metrics, settings: Settings) -> None:
    # Numbers, channels and call ids everywhere a request can carry them: the dialled number, the
    # campaign (a dialplan that passes the number as campaign), the source and the index error text.
    campaigns = ("acme-sales", "donors", "0612345678", "+31612345678", "campaign-1795860072")
    for dialled, campaign, reason in itertools.product(DIALLED, campaigns, Reason):
        verdict = Verdict.ALLOW if reason in (Reason.CONSENT, Reason.CUSTOMER, Reason.SERVICE_CALL) else Verdict.BLOCK
        for source, error in (("fastagi", None), ("0612345678", "+31612345678 refused"), ("ari", "timeout")):
            metrics.observe(
                decision_for(
                    dialled=dialled,
                    campaign=campaign,
                    verdict=verdict,
                    reason=reason,
                    would_block=campaign == "donors",
                    source=source,
                    index_error=error if reason is Reason.INDEX_UNAVAILABLE else None,
                )
            )
    metrics.count_log(logging.WARNING, "gatekeeper.fastagi.0612345678")
    metrics.count_log(logging.ERROR, "+31612345678")
    metrics.count_log(logging.ERROR, CHANNEL)

    offending = [
        (s.name, labels)
        for f in metrics.registry.collect()
        for s in f.samples
        for labels in [{k: v for k, v in s.labels.items() if k != "le"}]
        if any(NUMBER_LIKE.search(v) for v in labels.values())
    ]
    assert offending == []
    assert exposed(metrics.registry) == METRICS  # no new label set appeared either
    get = metrics.registry.get_sample_value
    unknown = {"verdict": "block", "reason": "objection", "campaign": UNKNOWN_CAMPAIGN}
    assert get("gatekeeper_decisions_total", unknown) == len(DIALLED) * 3 * 3  # three unknown campaigns
    assert get("gatekeeper_decision_duration_seconds_count", {"source": "cli"}) == len(DIALLED) * 5 * len(Reason)
    assert get("gatekeeper_index_errors_total", {"kind": "other"}) == len(DIALLED) * 5 * 2  # no error text, and text
    assert get("gatekeeper_log_messages_total", {"level": "warning", "logger": "fastagi"}) == 1
    assert get("gatekeeper_log_messages_total", {"level": "error", "logger": "other"}) == 2


def test_index_up_follows_lookups_and_probes(metrics: Metrics, settings: Settings) -> None:
    get = metrics.registry.get_sample_value
    allowed = decision_for(dialled="0612345678", campaign="acme-sales", verdict=Verdict.ALLOW, reason=Reason.CONSENT)
    failed = decision_for(dialled="0612345678", campaign="acme-sales", verdict=Verdict.BLOCK,
                          reason=Reason.INDEX_UNAVAILABLE, index_error=IndexFailure.CONNECTION)  # fmt: skip
    metrics.observe(allowed)
    assert get("gatekeeper_index_up") == 1
    metrics.observe(failed)
    assert get("gatekeeper_index_up") == 0
    assert get("gatekeeper_fail_closed_decisions_total", {"campaign": "acme-sales"}) == 1
    assert get("gatekeeper_index_errors_total", {"kind": "connection"}) == 1
    metrics.index_reachable(True)
    assert get("gatekeeper_index_up") == 1


@pytest.mark.parametrize(
    ("logger", "label"),
    [
        ("gatekeeper", "cli"),
        ("gatekeeper.fastagi.server", "fastagi"),
        ("gatekeeper.ari.app", "ari"),
        ("gatekeeper.index.store", "index"),
        ("gatekeeper.log.shipper", "log"),
        ("gatekeeper.gate.decisions", "gate"),
        ("gatekeeper.service", "service"),
        ("gatekeeper.somethingnew", "other"),
        ("aiohttp.server", "other"),
        ("asyncio", "other"),
        ("gatekeeperish", "other"),
    ],
)
def test_logger_names_map_onto_a_bounded_label(logger: str, label: str) -> None:
    assert log_source(logger) == label


def test_tenant_state_is_a_gauge_per_tenant(metrics: Metrics) -> None:
    get = metrics.registry.get_sample_value
    metrics.tenant_state("acme", loaded=True, split=True)
    metrics.tenant_state("other", loaded=False, split=False)
    assert get("gatekeeper_index_tenant_loaded", {"tenant": "acme"}) == 1
    assert get("gatekeeper_index_tenant_split", {"tenant": "acme"}) == 1
    assert get("gatekeeper_index_tenant_loaded", {"tenant": "other"}) == 0
    assert get("gatekeeper_index_tenant_split", {"tenant": "other"}) == 0
    metrics.tenant_state("acme", loaded=True, split=False)  # the next import finished the switch
    assert get("gatekeeper_index_tenant_split", {"tenant": "acme"}) == 0
