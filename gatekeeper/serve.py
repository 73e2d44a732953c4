"""Assemble and run `gatekeeper serve`: the service and the components the configuration asks for."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry

from gatekeeper.ari.app import AriApplication
from gatekeeper.config import Settings
from gatekeeper.fastagi.server import FastAgiServer
from gatekeeper.gate import Clock, wall_clock
from gatekeeper.log import LogStore, Outbox, Shipper
from gatekeeper.logs import DecisionLogger
from gatekeeper.service import Service
from gatekeeper.web import setup_web

log = logging.getLogger(__name__)


def build(settings: Settings, *, registry: CollectorRegistry | None = None, clock: Clock = wall_clock) -> Service:
    """The service of `settings`; `clock` gives the time of calls that carry none (the real time; the demo's own)."""
    service = Service(settings, registry=registry, clock=clock)
    service.gate.listeners.append(DecisionLogger())
    # The decision log: the gate appends every decision to the outbox (a Redis stream, or the local spool
    # while Redis is down); the shipper moves the records into SQL. The outbox starts before the adapters
    # and stops after them, so every call they decide is recorded.
    outbox = Outbox.from_settings(settings, service.index.client, fast=service.index.fast)
    service.gate.recorder = outbox
    service.add(outbox)
    if settings.log.ship_in_serve:
        service.add(Shipper.from_settings(settings, metrics=service.metrics))
    service.add(FastAgiServer(settings.fastagi, service.gate, service.metrics))
    if settings.ari is not None:
        service.add(AriApplication(settings.ari, service.gate, service.metrics))
    # The HTTP API and the compliance UI read the SQL log through their own connection (closed with the app).
    web_log = LogStore.from_dsn(settings.log.dsn)
    setup_web(service, web_log, web_log)
    return service


def install_uvloop() -> bool:
    """Use uvloop's event loop when it is installed (`pip install gatekeeper[fast]`)."""
    try:
        import uvloop  # noqa: PLC0415 - optional dependency
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def serve(settings: Settings) -> int:
    if install_uvloop():
        log.info("using uvloop")
    asyncio.run(build(settings).run())
    return 0
