"""The composition root: every gate gatekeeper runs is built here, complete, in one call.

A gate gets its recorder, its listeners and its clock as constructor arguments, so no adapter can forget
the evidence or the metrics of the calls it decides:

- `build_service`: `gatekeeper serve` — the gate records to the outbox and tells the metrics and the
  structured log; FastAGI, ARI and the HTTP API share it (the API's `record: false` checks get a dry gate
  with the same clock). The shipper, the outbox's replay and HTTP are components of the service.
- `command_gate`: the processes that decide one call and exit (`gatekeeper-agi`, `gatekeeper check
  --record`): the gate records to the same outbox (or the spool) as the service's, synchronously.
- `dry_gate`: decisions that are not calls (`gatekeeper check` without `--record`, the demo's rule-book
  scenarios): recorded nowhere, counted nowhere, and said so by their recorder (`NOT_RECORDED`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gatekeeper.config import Settings
from gatekeeper.gate import NOT_RECORDED, Clock, Gate, Listener, wall_clock
from gatekeeper.index.store import ConsentIndex
from gatekeeper.log.outbox import Outbox

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from gatekeeper.service import Service


def build_service(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    clock: Clock = wall_clock,
    listeners: Sequence[Listener] = (),
) -> Service:
    """`gatekeeper serve`: the service with the components the configuration asks for (not started).

    `listeners` are told about every decision after the metrics and the structured log (benchmarks and
    tests use it). The outbox starts before the adapters and stops after them.
    """
    # Imported here: the adapters, the web and the shipper are only needed by the service, and the
    # one-call processes (gatekeeper-agi starts one per call) should not pay for importing them.
    from gatekeeper.ari.app import AriApplication  # noqa: PLC0415
    from gatekeeper.fastagi.server import FastAgiServer  # noqa: PLC0415
    from gatekeeper.log.shipper import SERVE_BATCH, Shipper  # noqa: PLC0415
    from gatekeeper.log.store import LogStore  # noqa: PLC0415
    from gatekeeper.logs import DecisionLogger  # noqa: PLC0415
    from gatekeeper.metrics import Metrics  # noqa: PLC0415
    from gatekeeper.service import Service  # noqa: PLC0415
    from gatekeeper.web import setup_web  # noqa: PLC0415

    metrics = Metrics(settings, registry)
    index = ConsentIndex.from_settings(settings.index)
    outbox = Outbox.from_settings(settings, index.client, fast=index.fast)
    gate = Gate(settings, index, outbox, listeners=[metrics.observe, DecisionLogger(), *listeners], clock=clock)
    service = Service(settings, metrics=metrics, index=index, gate=gate)
    service.add(outbox)
    if settings.log.ship_in_serve:
        service.add(Shipper.from_settings(settings, metrics=metrics, batch=SERVE_BATCH))
    service.add(FastAgiServer(settings.fastagi, gate, metrics))
    if settings.ari is not None:
        service.add(AriApplication(settings.ari, gate, metrics))
    # The HTTP API and the compliance UI read the SQL log through their own connection (closed with the app).
    web_log = LogStore.from_dsn(settings.log.dsn)
    setup_web(service, web_log, web_log, dry=dry_gate(settings, index, clock=clock))
    return service


def command_gate(
    settings: Settings, index: ConsentIndex, *, clock: Clock = wall_clock, budget: float | None = None
) -> Gate:
    """The gate of a process that decides one call: its record goes to this instance's outbox or spool."""
    return Gate(settings, index, Outbox.from_settings(settings, index.client), clock=clock, budget=budget)


def dry_gate(
    settings: Settings, index: ConsentIndex, *, clock: Clock = wall_clock, budget: float | None = None
) -> Gate:
    """A gate whose decisions are not calls: no record, no metrics, no log line."""
    return Gate(settings, index, NOT_RECORDED, clock=clock, budget=budget)
