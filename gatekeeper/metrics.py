"""Prometheus metrics: one injected registry, `gatekeeper_` prefix, base units, bounded labels only.

No number, channel or call id is ever a label value. Campaign labels come from the configuration (a
bounded set); calls for campaigns that are not configured are counted under `_unknown`. Every label
combination is created up front so the series exist before the first call.
"""

from __future__ import annotations

import logging
import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from gatekeeper import __version__
from gatekeeper.config import Settings
from gatekeeper.contract import IndexFailure, Reason, SessionOutcome, Source, Verdict
from gatekeeper.core.policy import FIRST_FACT_RULE
from gatekeeper.record import DecisionRecord

UNKNOWN_CAMPAIGN = "_unknown"
# 50 µs to 1 s: the decision itself is well under a millisecond; the tail shows Redis trouble.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
INDEX_ERROR_KINDS = tuple(kind.value for kind in IndexFailure)
SOURCES = tuple(source.value for source in Source)
FASTAGI_OUTCOMES = tuple(outcome.value for outcome in SessionOutcome)
# The `logger` label of gatekeeper_log_messages_total: the part of gatekeeper that logged (the second
# component of the logger name), `other` for everything else (aiohttp, asyncio, redis).
LOG_SOURCES = ("agi", "ari", "cli", "fastagi", "gate", "index", "log", "serve", "service", "web", "other")
LOG_LEVELS = ("warning", "error")


def log_source(logger: str) -> str:
    """Map a logger name onto the bounded `logger` label (`gatekeeper.fastagi.server` -> `fastagi`)."""
    if logger == "gatekeeper":
        return "cli"  # the command line logs as the package itself
    head, _, rest = logger.partition(".")
    if head != "gatekeeper":
        return "other"
    part = rest.partition(".")[0]
    return part if part in LOG_SOURCES else "other"


class Metrics:
    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.campaigns = frozenset(settings.campaigns)
        self.decisions = Counter(
            "gatekeeper_decisions",
            "Decisions by verdict, reason and campaign (monitor-mode allows keep the blocking reason).",
            ["verdict", "reason", "campaign"],
            registry=r,
        )
        self.would_block = Counter(
            "gatekeeper_would_block",
            "Calls a campaign in monitor mode let through that enforcement would have blocked.",
            ["reason", "campaign"],
            registry=r,
        )
        self.duration = Histogram(
            "gatekeeper_decision_duration_seconds",
            "Time from the request to the verdict, including the index lookup.",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.index_errors = Counter(
            "gatekeeper_index_errors",
            "Consent index lookups that failed, by kind (each one is a fail-closed decision).",
            ["kind"],
            registry=r,
        )
        self.fail_closed = Counter(
            "gatekeeper_fail_closed_decisions",
            "Decisions blocked because the consent index could not answer in time.",
            ["campaign"],
            registry=r,
        )
        self.fastagi_open = Gauge("gatekeeper_fastagi_sessions_open", "FastAGI sessions in progress.", registry=r)
        self.fastagi_sessions = Counter(
            "gatekeeper_fastagi_sessions",
            "FastAGI sessions by outcome.",
            ["outcome"],
            registry=r,
        )
        self.ari_connected = Gauge(
            "gatekeeper_ari_connected", "1 while the ARI websocket is connected, else 0.", registry=r
        )
        self.ari_configured = Gauge(
            "gatekeeper_ari_configured",
            "1 when this instance is configured to run the ARI application (so ari_connected 0 is a fault).",
            registry=r,
        )
        self.index_up = Gauge(
            "gatekeeper_index_up",
            "1 when the consent index answered the last lookup or probe, 0 when it did not (NaN: not asked yet).",
            registry=r,
        )
        self.index_generation = Gauge(
            "gatekeeper_index_generation", "The index generation in use, per tenant.", ["tenant"], registry=r
        )
        self.index_import_time = Gauge(
            "gatekeeper_index_last_import_timestamp_seconds",
            "Unix time of the tenant's last completed import.",
            ["tenant"],
            registry=r,
        )
        self.tenant_loaded = Gauge(
            "gatekeeper_index_tenant_loaded",
            "1 when the tenant has data loaded, 0 when it has none (its campaigns' calls find no facts), per "
            "configured tenant (NaN: not read yet).",
            ["tenant"],
            registry=r,
        )
        self.tenant_split = Gauge(
            "gatekeeper_index_tenant_split",
            "1 while the tenant is split between two generations by an import that died during its switch (the "
            "next import of the tenant finishes it), else 0; per configured tenant.",
            ["tenant"],
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "gatekeeper_outbox_backlog", "Decision records waiting to be shipped to the SQL log.", registry=r
        )
        self.shipper_lag = Gauge(
            "gatekeeper_shipper_lag_seconds",
            "Age of the oldest decision record not yet shipped to the SQL log.",
            registry=r,
        )
        self.log_messages = Counter(
            "gatekeeper_log_messages",
            "Log records at warning level and above, by level and by the part of gatekeeper that logged them.",
            ["level", "logger"],
            registry=r,
        )
        self.build = Info("gatekeeper_build", "Version of the running gatekeeper.", registry=r)
        self.build.info({"version": __version__})
        self._decision_children: dict[tuple[Verdict, Reason, str], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}
        self._preinitialise(settings)

    def _preinitialise(self, settings: Settings) -> None:
        for campaign in (*sorted(settings.campaigns), UNKNOWN_CAMPAIGN):
            for reason in Reason:
                for verdict in Verdict:
                    self.decisions.labels(verdict.value, reason.value, campaign)
                self.would_block.labels(reason.value, campaign)
            self.fail_closed.labels(campaign)
        for kind in INDEX_ERROR_KINDS:
            self.index_errors.labels(kind)
        for source in SOURCES:
            self.duration.labels(source)
        for outcome in FASTAGI_OUTCOMES:
            self.fastagi_sessions.labels(outcome)
        for level in LOG_LEVELS:
            for source in LOG_SOURCES:
                self.log_messages.labels(level, source)
        self.fastagi_open.set(0)
        self.ari_connected.set(0)
        self.ari_configured.set(1 if settings.ari is not None else 0)
        self.index_up.set(math.nan)
        for tenant in sorted(settings.tenants):
            self.index_generation.labels(tenant)
            self.index_import_time.labels(tenant)
            self.tenant_loaded.labels(tenant).set(math.nan)
            self.tenant_split.labels(tenant).set(0)

    def campaign_label(self, campaign: str) -> str:
        return campaign if campaign in self.campaigns else UNKNOWN_CAMPAIGN

    def observe(self, record: DecisionRecord) -> None:
        """A gate listener: count the decision and its latency (children cached: this runs on every call)."""
        campaign = self.campaign_label(record.campaign)
        key = (record.verdict, record.reason, campaign)
        counter = self._decision_children.get(key)
        if counter is None:
            counter = self._decision_children[key] = self.decisions.labels(
                record.verdict.value, record.reason.value, campaign
            )
        counter.inc()
        if record.would_block:
            self.would_block.labels(record.reason.value, campaign).inc()
        histogram = self._duration_children.get(record.source)
        if histogram is None:
            source = record.source if record.source in SOURCES else Source.CLI.value
            histogram = self._duration_children[record.source] = self.duration.labels(source)
        histogram.observe(record.latency_us / 1e6)
        if record.reason is Reason.INDEX_UNAVAILABLE:
            self.fail_closed.labels(campaign).inc()
            kind = record.index_error if record.index_error in INDEX_ERROR_KINDS else IndexFailure.OTHER
            self.index_errors.labels(kind).inc()
            self.index_up.set(0)
        elif record.rule >= FIRST_FACT_RULE:  # the index answered this decision's lookup
            self.index_up.set(1)

    def index_reachable(self, reachable: bool) -> None:
        """Record the outcome of a probe of the index (readiness check, generation refresh)."""
        self.index_up.set(1 if reachable else 0)

    def tenant_state(self, tenant: str, *, loaded: bool, split: bool) -> None:
        """Record what the last read of the index found for a configured tenant."""
        self.tenant_loaded.labels(tenant).set(1 if loaded else 0)
        self.tenant_split.labels(tenant).set(1 if split else 0)

    def count_log(self, levelno: int, logger: str) -> None:
        """Count one log record at warning level or above (see `gatekeeper.logs.LogCounter`)."""
        level = "error" if levelno >= logging.ERROR else "warning"
        self.log_messages.labels(level, log_source(logger)).inc()
