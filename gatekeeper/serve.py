"""Run `gatekeeper serve`: the service the composition root builds, on uvloop when it is installed."""

from __future__ import annotations

import asyncio
import logging

from gatekeeper.compose import build_service
from gatekeeper.config import Settings

log = logging.getLogger(__name__)


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
    asyncio.run(build_service(settings).run())
    return 0
