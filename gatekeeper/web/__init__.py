"""The HTTP API (`/api/v1`) and the compliance web UI (`/`), served by `gatekeeper serve` on `[http] listen`.

`setup_web` adds both to the service's aiohttp application; `/healthz`, `/readyz` and `/metrics` stay
open. The decision log is opened (migrated) on first use and closed with the application, so a database
that is down never keeps the gate from deciding calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gatekeeper.gate import Gate
from gatekeeper.log.query import LogReader
from gatekeeper.log.store import LogStore
from gatekeeper.service import Service
from gatekeeper.web.api import Api, api_errors
from gatekeeper.web.auth import Signer, TokenBook, new_token
from gatekeeper.web.compliance import Compliance, LogAccess
from gatekeeper.web.ui import UI_KEY, Ui, ui_errors

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
NO_STORE = {"/healthz", "/readyz", "/metrics"}


@dataclass(frozen=True, slots=True)
class Web:
    """What `setup_web` put on the application (for tests and the demo)."""

    compliance: Compliance
    api: Api
    ui: Ui
    tokens: TokenBook


WEB_KEY = web.AppKey("gatekeeper_web", Web)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path not in NO_STORE and not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")  # pages and answers hold personal data


def setup_web(service: Service, reader: LogReader, store: LogStore, *, dry: Gate) -> None:
    """Add the API under `/api/v1` and the UI under `/` to `service.web` (before the service starts).

    `reader` answers the log queries and `store` writes the audit trail (they may be one object); both are
    closed when the application shuts down. Checks go through the service's gate, or through `dry` (no
    record, no metrics) when the client asks for `record: false`.
    """
    app = service.web
    settings = service.settings
    tokens = TokenBook(settings.http.tokens)
    log_access = LogAccess(reader, store)
    compliance = Compliance(settings, service.gate, dry, service.index, log_access)
    api = Api(compliance, tokens)
    ui = Ui(compliance, tokens, Signer(settings.http.session_secret, tokens))
    api.add_routes(app)
    ui.add_routes(app)
    app.router.add_static("/static", STATIC, name="static")
    app.middlewares.append(api_errors)
    app.middlewares.append(ui_errors)
    app.on_response_prepare.append(_security_headers)

    async def close(_app: web.Application) -> None:
        await log_access.close()

    app.on_cleanup.append(close)
    app[UI_KEY] = ui
    app[WEB_KEY] = Web(compliance, api, ui, tokens)


__all__ = ["WEB_KEY", "Web", "new_token", "setup_web"]
