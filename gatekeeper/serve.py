"""Assemble and run `gatekeeper serve`: the service and the components the configuration asks for."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry

from gatekeeper.ari.app import AriApplication
from gatekeeper.config import Settings
from gatekeeper.fastagi.server import FastAgiServer
from gatekeeper.logs import DecisionLogger
from gatekeeper.service import Service

log = logging.getLogger(__name__)


def build(settings: Settings, *, registry: CollectorRegistry | None = None) -> Service:
    service = Service(settings, registry=registry)
    service.gate.listeners.append(DecisionLogger())
    service.add(FastAgiServer(settings.fastagi, service.gate, service.metrics))
    if settings.ari is not None:
        service.add(AriApplication(settings.ari, service.gate, service.metrics))
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
