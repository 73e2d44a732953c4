"""ARI websocket events, parsed once into frozen values.

Asterisk sends one JSON object per websocket text frame on `/ari/events`. `parse_event` turns a frame
into one of the dataclasses below, or raises `AriEventError`; nothing else in gatekeeper digs in event
JSON. Event types gatekeeper does not act on become `UnknownEvent`, so a new Asterisk event never breaks
the reader.

The TypedDicts describe the wire format of Asterisk 23.4.1 as recorded in
`asterisk-traces/ari-events.jsonl`. They are the JSON edge only: the parser validates every field it
reads, and the ARI simulator in the tests uses them to build frames of the same shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Final, Literal, NotRequired, TypeAlias, TypedDict

# ---------------------------------------------------------------------------------------------------
# JSON edge: the shapes Asterisk sends (key order as on the wire)


class CallerIdJson(TypedDict):
    name: str
    number: str


class DialplanJson(TypedDict):
    context: str
    exten: str
    priority: int
    app_name: str
    app_data: str


class ChannelJson(TypedDict):
    id: str
    name: str
    state: str
    protocol_id: NotRequired[str]
    caller: CallerIdJson
    connected: CallerIdJson
    accountcode: str
    dialplan: DialplanJson
    creationtime: str
    language: str
    channelvars: NotRequired[dict[str, str]]


class StasisStartJson(TypedDict):
    type: Literal["StasisStart"]
    timestamp: str
    args: list[str]
    channel: ChannelJson
    asterisk_id: NotRequired[str]
    application: str


class StasisEndJson(TypedDict):
    type: Literal["StasisEnd"]
    timestamp: str
    channel: ChannelJson
    asterisk_id: NotRequired[str]
    application: str


class ChannelVarsetJson(TypedDict):
    variable: str
    value: str
    type: Literal["ChannelVarset"]
    timestamp: str
    channel: NotRequired[ChannelJson]
    asterisk_id: NotRequired[str]
    application: str


class ChannelHangupRequestJson(TypedDict):
    cause: int
    soft: NotRequired[bool]
    type: Literal["ChannelHangupRequest"]
    timestamp: str
    channel: ChannelJson
    asterisk_id: NotRequired[str]
    application: str


class ChannelStateChangeJson(TypedDict):
    type: Literal["ChannelStateChange"]
    timestamp: str
    channel: ChannelJson
    asterisk_id: NotRequired[str]
    application: str


class ChannelDialplanJson(TypedDict):
    type: Literal["ChannelDialplan"]
    timestamp: str
    dialplan_app: str
    dialplan_app_data: str
    channel: ChannelJson
    asterisk_id: NotRequired[str]
    application: str


class ChannelDestroyedJson(TypedDict):
    type: Literal["ChannelDestroyed"]
    timestamp: str
    cause: int
    cause_txt: str
    channel: ChannelJson
    asterisk_id: NotRequired[str]
    application: str


EventJson: TypeAlias = (
    StasisStartJson
    | StasisEndJson
    | ChannelVarsetJson
    | ChannelHangupRequestJson
    | ChannelStateChangeJson
    | ChannelDialplanJson
    | ChannelDestroyedJson
)

# ---------------------------------------------------------------------------------------------------
# Values


class AriEventError(ValueError):
    """A websocket frame that is not a well-formed ARI event (bad JSON, or a required field missing or
    of the wrong type). `event_type` is the frame's `type` when it could be read, `path` the dotted path
    of the offending field."""

    def __init__(self, message: str, *, event_type: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.event_type = event_type
        self.path = path


@dataclass(frozen=True, slots=True)
class CallerId:
    name: str
    number: str


@dataclass(frozen=True, slots=True)
class Dialplan:
    """Where a channel is in the dialplan, and the application it is running there."""

    context: str
    exten: str
    priority: int
    app_name: str
    app_data: str


def _no_channelvars() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel snapshot as carried in an event. `channelvars` holds only the variables listed under
    `channelvars` in Asterisk's ari.conf (usually none); read others with a REST GET."""

    id: str
    name: str
    state: str
    caller: CallerId
    connected: CallerId
    accountcode: str
    dialplan: Dialplan
    creationtime: datetime
    language: str
    protocol_id: str = ""
    channelvars: Mapping[str, str] = field(default_factory=_no_channelvars, hash=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class StasisStart:
    """A channel entered the application. `args` are the Stasis() arguments after the app name."""

    type: Literal["StasisStart"] = field(default="StasisStart", init=False)
    timestamp: datetime
    asterisk_id: str
    application: str
    args: tuple[str, ...]
    channel: Channel


@dataclass(frozen=True, slots=True, kw_only=True)
class StasisEnd:
    """A channel left the application (continue, hangup, far-end hangup); REST calls on it now 404."""

    type: Literal["StasisEnd"] = field(default="StasisEnd", init=False)
    timestamp: datetime
    asterisk_id: str
    application: str
    channel: Channel


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelVarset:
    """A variable was set; `channel` is None for a global variable."""

    type: Literal["ChannelVarset"] = field(default="ChannelVarset", init=False)
    timestamp: datetime
    asterisk_id: str
    application: str
    variable: str
    value: str
    channel: Channel | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelHangupRequest:
    """A hangup was requested. After an ARI DELETE, `cause` is Asterisk's soft-hangup flag (32,
    AST_SOFTHANGUP_EXPLICIT) and `soft` is True, not the Q.850 cause; a far-end hangup has the Q.850
    cause (16) and no `soft` key (False here)."""

    type: Literal["ChannelHangupRequest"] = field(default="ChannelHangupRequest", init=False)
    timestamp: datetime
    asterisk_id: str
    application: str
    cause: int
    soft: bool
    channel: Channel


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelStateChange:
    type: Literal["ChannelStateChange"] = field(default="ChannelStateChange", init=False)
    timestamp: datetime
    asterisk_id: str
    application: str
    channel: Channel


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelDialplan:
    type: Literal["ChannelDialplan"] = field(default="ChannelDialplan", init=False)
    timestamp: datetime
    asterisk_id: str
    application: str
    dialplan_app: str
    dialplan_app_data: str
    channel: Channel


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelDestroyed:
    """The channel is gone; `cause` is the Q.850 hangup cause (HANGUPCAUSE). Sent only to applications
    subscribed to the channel after it left Stasis."""

    type: Literal["ChannelDestroyed"] = field(default="ChannelDestroyed", init=False)
    timestamp: datetime
    asterisk_id: str
    application: str
    cause: int
    cause_txt: str
    channel: Channel


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownEvent:
    """Any other message. Only `type` is required; `raw` is the frame's text, for logging."""

    type: str
    timestamp: datetime | None
    asterisk_id: str
    application: str
    raw: str


Event: TypeAlias = (
    StasisStart
    | StasisEnd
    | ChannelVarset
    | ChannelHangupRequest
    | ChannelStateChange
    | ChannelDialplan
    | ChannelDestroyed
    | UnknownEvent
)

# ---------------------------------------------------------------------------------------------------
# Parsing


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _Fields:
    """Typed reads from one JSON object; every miss becomes an `AriEventError` naming the field."""

    __slots__ = ("_data", "_event_type", "_path")

    def __init__(self, data: object, path: str, event_type: str | None) -> None:
        if not isinstance(data, dict):
            raise AriEventError(
                f"{path or 'frame'}: expected a JSON object, got {_json_kind(data)}",
                event_type=event_type,
                path=path or None,
            )
        self._data: dict[str, object] = data
        self._path = path
        self._event_type = event_type

    def _where(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def _error(self, key: str, problem: str) -> AriEventError:
        where = self._where(key)
        prefix = f"{self._event_type} " if self._event_type else ""
        return AriEventError(f"{prefix}{where}: {problem}", event_type=self._event_type, path=where)

    def _get(self, key: str) -> object:
        if key not in self._data:
            raise self._error(key, "missing")
        return self._data[key]

    def _wrong(self, key: str, expected: str, value: object) -> AriEventError:
        return self._error(key, f"expected {expected}, got {_json_kind(value)}")

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self._wrong(key, "a string", value)
        return value

    def text_or(self, key: str, default: str) -> str:
        return self.text(key) if key in self._data else default

    def integer(self, key: str) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(key, "an integer", value)
        return value

    def flag_or_false(self, key: str) -> bool:
        if key not in self._data:
            return False
        value = self._data[key]
        if not isinstance(value, bool):
            raise self._wrong(key, "a boolean", value)
        return value

    def child(self, key: str) -> _Fields:
        return _Fields(self._get(key), self._where(key), self._event_type)

    def child_or_none(self, key: str) -> _Fields | None:
        if self._data.get(key) is None:
            return None
        return self.child(key)

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list):
            raise self._wrong(key, "an array", value)
        items: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self._wrong(f"{key}[{index}]", "a string", item)
            items.append(item)
        return tuple(items)

    def text_map(self, key: str) -> Mapping[str, str]:
        value = self._data.get(key)
        if value is None:
            return _no_channelvars()
        if not isinstance(value, dict):
            raise self._wrong(key, "an object", value)
        result: dict[str, str] = {}
        for name, item in value.items():
            if not isinstance(item, str):
                raise self._wrong(f"{key}.{name}", "a string", item)
            result[name] = item
        return MappingProxyType(result)

    def instant(self, key: str) -> datetime:
        raw = self.text(key)
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            raise self._error(key, f"not a timestamp: {raw!r}") from None
        if moment.tzinfo is None:
            raise self._error(key, f"timestamp without a UTC offset: {raw!r}")
        return moment


def _caller(fields: _Fields) -> CallerId:
    return CallerId(name=fields.text("name"), number=fields.text("number"))


def _channel(fields: _Fields) -> Channel:
    dialplan = fields.child("dialplan")
    return Channel(
        id=fields.text("id"),
        name=fields.text("name"),
        state=fields.text("state"),
        caller=_caller(fields.child("caller")),
        connected=_caller(fields.child("connected")),
        accountcode=fields.text("accountcode"),
        dialplan=Dialplan(
            context=dialplan.text("context"),
            exten=dialplan.text("exten"),
            priority=dialplan.integer("priority"),
            app_name=dialplan.text("app_name"),
            app_data=dialplan.text("app_data"),
        ),
        creationtime=fields.instant("creationtime"),
        language=fields.text("language"),
        protocol_id=fields.text_or("protocol_id", ""),
        channelvars=fields.text_map("channelvars"),
    )


def _stasis_start(fields: _Fields) -> StasisStart:
    return StasisStart(
        timestamp=fields.instant("timestamp"),
        asterisk_id=fields.text_or("asterisk_id", ""),
        application=fields.text("application"),
        args=fields.texts("args"),
        channel=_channel(fields.child("channel")),
    )


def _stasis_end(fields: _Fields) -> StasisEnd:
    return StasisEnd(
        timestamp=fields.instant("timestamp"),
        asterisk_id=fields.text_or("asterisk_id", ""),
        application=fields.text("application"),
        channel=_channel(fields.child("channel")),
    )


def _channel_varset(fields: _Fields) -> ChannelVarset:
    channel = fields.child_or_none("channel")
    return ChannelVarset(
        timestamp=fields.instant("timestamp"),
        asterisk_id=fields.text_or("asterisk_id", ""),
        application=fields.text("application"),
        variable=fields.text("variable"),
        value=fields.text("value"),
        channel=None if channel is None else _channel(channel),
    )


def _channel_hangup_request(fields: _Fields) -> ChannelHangupRequest:
    return ChannelHangupRequest(
        timestamp=fields.instant("timestamp"),
        asterisk_id=fields.text_or("asterisk_id", ""),
        application=fields.text("application"),
        cause=fields.integer("cause"),
        soft=fields.flag_or_false("soft"),
        channel=_channel(fields.child("channel")),
    )


def _channel_state_change(fields: _Fields) -> ChannelStateChange:
    return ChannelStateChange(
        timestamp=fields.instant("timestamp"),
        asterisk_id=fields.text_or("asterisk_id", ""),
        application=fields.text("application"),
        channel=_channel(fields.child("channel")),
    )


def _channel_dialplan(fields: _Fields) -> ChannelDialplan:
    return ChannelDialplan(
        timestamp=fields.instant("timestamp"),
        asterisk_id=fields.text_or("asterisk_id", ""),
        application=fields.text("application"),
        dialplan_app=fields.text("dialplan_app"),
        dialplan_app_data=fields.text("dialplan_app_data"),
        channel=_channel(fields.child("channel")),
    )


def _channel_destroyed(fields: _Fields) -> ChannelDestroyed:
    return ChannelDestroyed(
        timestamp=fields.instant("timestamp"),
        asterisk_id=fields.text_or("asterisk_id", ""),
        application=fields.text("application"),
        cause=fields.integer("cause"),
        cause_txt=fields.text("cause_txt"),
        channel=_channel(fields.child("channel")),
    )


_PARSERS: Final[Mapping[str, Callable[[_Fields], Event]]] = MappingProxyType(
    {
        "StasisStart": _stasis_start,
        "StasisEnd": _stasis_end,
        "ChannelVarset": _channel_varset,
        "ChannelHangupRequest": _channel_hangup_request,
        "ChannelStateChange": _channel_state_change,
        "ChannelDialplan": _channel_dialplan,
        "ChannelDestroyed": _channel_destroyed,
    }
)


def _unknown(fields: _Fields, event_type: str, raw: str) -> UnknownEvent:
    # Lenient on purpose: only `type` is known to exist on every ARI message.
    try:
        timestamp: datetime | None = fields.instant("timestamp")
    except AriEventError:
        timestamp = None
    try:
        asterisk_id = fields.text_or("asterisk_id", "")
    except AriEventError:
        asterisk_id = ""
    try:
        application = fields.text_or("application", "")
    except AriEventError:
        application = ""
    return UnknownEvent(type=event_type, timestamp=timestamp, asterisk_id=asterisk_id, application=application, raw=raw)


def parse_event(text: str | bytes) -> Event:
    """Parse one websocket text frame. Raises `AriEventError` (and nothing else) if the frame is not
    JSON, not an object, has no string `type`, or a known event lacks a required field."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AriEventError(f"frame is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AriEventError(f"frame is not JSON: {exc.msg} at position {exc.pos}") from None
    except (ValueError, RecursionError) as exc:  # e.g. integers beyond the int-string limit, deep nesting
        raise AriEventError(f"frame is not usable JSON: {type(exc).__name__}") from None
    fields = _Fields(data, "", None)
    event_type = fields.text("type")
    parser = _PARSERS.get(event_type)
    if parser is None:
        return _unknown(fields, event_type, text)
    return parser(_Fields(data, "", event_type))
