"""The ARI REST requests gatekeeper makes, built as pure values (no I/O), and ARI error bodies parsed.

Targets are absolute from Asterisk's HTTP root (`/ari/...`) and already percent-encoded: append them to
the base URL (which carries http.conf's `prefix`, if any) and send them unchanged; with aiohttp,
`yarl.URL(base_url + request.target, encoded=True)`. A space is encoded as `%20`, never `+`, because
Asterisk decodes `+` in a query string as a space. Values travel in the query string, which Asterisk
accepts for every call used here (ari-rest.txt).

Authentication is HTTP Basic on every request, the websocket upgrade included (`basic_authorization`).
Asterisk also accepts `api_key=user:pass` in the URL, but that puts the password in URLs and logs.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from urllib.parse import quote, urlsplit, urlunsplit

ARI_PREFIX: Final = "/ari"

# Q.850 cause 21 "Call Rejected": what the dialplan's `h` extension sees as HANGUPCAUSE after a block.
CAUSE_CALL_REJECTED: Final = 21

_MAX_ERROR_TEXT: Final = 200


class Method(StrEnum):
    GET = "GET"
    POST = "POST"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class AriRequest:
    """One REST call: method, percent-encoded path and query string (without the `?`)."""

    method: Method
    path: str
    query: str = ""

    @property
    def target(self) -> str:
        """Path plus query string, as it goes on the request line."""
        return f"{self.path}?{self.query}" if self.query else self.path


class AriHttpError(Exception):
    """A non-2xx ARI response. `message` is Asterisk's `{"message": ...}` text when the body has one."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(status, message, reason)
        self.status = status
        self.message = message
        self.reason = reason

    def __str__(self) -> str:
        reason = f" {self.reason}" if self.reason else ""
        return f"ARI HTTP {self.status}{reason}: {self.message}"

    @property
    def not_found(self) -> bool:
        """404: the channel left Stasis or never existed (or, for GET variable, the variable is unset)."""
        return self.status == 404


class AriBodyError(ValueError):
    """A successful ARI response whose body is not the documented JSON."""


def _segment(value: str, what: str) -> str:
    if not value:
        raise ValueError(f"{what} must not be empty")
    return quote(value, safe="")


def _query(*pairs: tuple[str, str]) -> str:
    # ':' stays literal (as in `eventSource=channel:1795860153.81`); everything else reserved is encoded.
    return "&".join(f"{quote(name, safe='')}={quote(value, safe=':')}" for name, value in pairs)


def _channel_path(channel_id: str) -> str:
    return f"{ARI_PREFIX}/channels/{_segment(channel_id, 'channel id')}"


def get_channel(channel_id: str) -> AriRequest:
    """`GET /ari/channels/{id}`: 200 with the channel snapshot, 404 once it is gone."""
    return AriRequest(Method.GET, _channel_path(channel_id))


def get_variable(channel_id: str, variable: str) -> AriRequest:
    """`GET /ari/channels/{id}/variable?variable=X`: 200 `{"value": ...}` or 404 Variable Not Found."""
    if not variable:
        raise ValueError("variable name must not be empty")
    return AriRequest(Method.GET, f"{_channel_path(channel_id)}/variable", _query(("variable", variable)))


def set_variable(channel_id: str, variable: str, value: str) -> AriRequest:
    """`POST /ari/channels/{id}/variable?variable=X&value=Y`: 204, then a ChannelVarset event."""
    if not variable:
        raise ValueError("variable name must not be empty")
    return AriRequest(
        Method.POST,
        f"{_channel_path(channel_id)}/variable",
        _query(("variable", variable), ("value", value)),
    )


def continue_in_dialplan(
    channel_id: str,
    *,
    context: str | None = None,
    extension: str | None = None,
    priority: int | None = None,
) -> AriRequest:
    """`POST /ari/channels/{id}/continue`: 204, then StasisEnd. Without parameters the dialplan resumes at
    the next priority after Stasis(); with a context and no extension Asterisk uses extension `s`."""
    if priority is not None and priority < 1:
        raise ValueError(f"priority must be 1 or more, not {priority}")
    pairs: list[tuple[str, str]] = []
    if context is not None:
        pairs.append(("context", context))
    if extension is not None:
        pairs.append(("extension", extension))
    if priority is not None:
        pairs.append(("priority", str(priority)))
    return AriRequest(Method.POST, f"{_channel_path(channel_id)}/continue", _query(*pairs))


def hangup(channel_id: str, *, reason_code: int = CAUSE_CALL_REJECTED) -> AriRequest:
    """`DELETE /ari/channels/{id}?reason_code=21`: 204, then ChannelHangupRequest and StasisEnd; the
    dialplan's `h` extension sees HANGUPCAUSE=reason_code. (`reason` is never sent with `reason_code`:
    Asterisk answers 400.)"""
    if reason_code < 0:
        raise ValueError(f"reason_code must not be negative, not {reason_code}")
    return AriRequest(Method.DELETE, _channel_path(channel_id), _query(("reason_code", str(reason_code))))


def get_application(app: str) -> AriRequest:
    """`GET /ari/applications/{app}`: `channel_ids` lists the channels still in Stasis, e.g. after a
    websocket reconnect (events of the gap are not replayed)."""
    return AriRequest(Method.GET, f"{ARI_PREFIX}/applications/{_segment(app, 'application name')}")


def subscribe_channel(app: str, channel_id: str) -> AriRequest:
    """`POST /ari/applications/{app}/subscription?eventSource=channel:{id}`: keeps the app subscribed
    after StasisEnd, so ChannelDestroyed (with the final hangup cause) is delivered."""
    if not channel_id:
        raise ValueError("channel id must not be empty")
    return AriRequest(
        Method.POST,
        f"{ARI_PREFIX}/applications/{_segment(app, 'application name')}/subscription",
        _query(("eventSource", f"channel:{channel_id}")),
    )


def events_path(app: str, *, subscribe_all: bool = False) -> str:
    """`/ari/events?app=NAME&subscribeAll=false`: the websocket that registers the Stasis application."""
    if not app:
        raise ValueError("application name must not be empty")
    query = _query(("app", app), ("subscribeAll", "true" if subscribe_all else "false"))
    return f"{ARI_PREFIX}/events?{query}"


def events_url(base_url: str, app: str, *, subscribe_all: bool = False) -> str:
    """The websocket URL for `base_url` (`http://host:8088`, `https://...`, or already `ws(s)://`)."""
    parts = urlsplit(base_url)
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    scheme = schemes.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s) or ws(s) base URL: {base_url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"base URL must not have a query or fragment: {base_url!r}")
    root = urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return root + events_path(app, subscribe_all=subscribe_all)


def basic_authorization(username: str, password: str) -> str:
    """The `Authorization` header value for HTTP Basic (ari.conf user and password)."""
    if ":" in username:
        raise ValueError("an HTTP Basic user name cannot contain ':'")
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _body_text(body: str | bytes) -> str:
    if isinstance(body, bytes | bytearray):
        return bytes(body).decode("utf-8", errors="replace")
    return body


def parse_error(status: int, body: str | bytes, *, reason: str = "") -> AriHttpError:
    """Turn an ARI error response into `AriHttpError`. Never raises: a body that is not
    `{"message": "..."}` (e.g. a proxy's HTML page) gives its first characters, or the reason phrase."""
    text = _body_text(body)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        message = data["message"]
    else:
        message = " ".join(text.split())[:_MAX_ERROR_TEXT] or reason or f"HTTP {status}"
    return AriHttpError(status, message, reason)


def parse_variable_value(body: str | bytes) -> str:
    """The value of a 200 `GET .../variable` response, `{"value": "..."}`."""
    try:
        data = json.loads(_body_text(body))
    except (ValueError, RecursionError):
        raise AriBodyError("variable response is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("value"), str):
        raise AriBodyError('variable response is not {"value": "..."}')
    value: str = data["value"]
    return value
