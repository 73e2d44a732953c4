"""The ARI event model and REST helpers against the frames and requests of a real Asterisk 23.4.1
(../shared/asterisk-traces)."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qsl, unquote

import pytest

from gatekeeper.ari import rest
from gatekeeper.ari.events import (
    AriEventError,
    CallerId,
    Channel,
    ChannelDestroyed,
    ChannelDialplan,
    ChannelHangupRequest,
    ChannelStateChange,
    ChannelVarset,
    Dialplan,
    Event,
    StasisEnd,
    StasisStart,
    UnknownEvent,
    parse_event,
)
from tests.asterisk_sim.traces import TRACES_DIR

TRACES = TRACES_DIR
EVENTS_FILE = TRACES / "ari-events.jsonl"


@pytest.fixture(scope="module")
def frames() -> list[str]:
    if not EVENTS_FILE.is_file():
        pytest.fail(f"Asterisk trace {EVENTS_FILE} is missing: the traces must sit beside the checkout")
    return EVENTS_FILE.read_text(encoding="utf-8").splitlines()


def _frame(frames: list[str], index: int) -> dict[str, object]:
    data = json.loads(frames[index])
    assert isinstance(data, dict)
    return data


# (event class, channel id, attributes) for each of the 27 frames, in order (README: calls A to D)
A, B, C, E, F, G, D = (
    "1795860145.73",
    "1795860148.75",
    "1795860150.77",
    "1795860152.79",
    "1795860153.81",
    "1795860155.83",
    "1795860158.85",
)
H_EXTEN_DATA = (
    "1,GKTRACE outbound-ari h-exten channel=Local/0612345673@outbound-ari-00000028;2 "
    "STASISSTATUS=SUCCESS GATEKEEPER_RESULT= HANGUPCAUSE=21"
)
EXPECTED: list[tuple[type[Event], str, dict[str, object]]] = [
    (StasisStart, A, {"args": ("0612345678",)}),
    (ChannelVarset, A, {"variable": "GATEKEEPER_RESULT", "value": "ALLOW via ari"}),
    (ChannelVarset, A, {"variable": "GK_JSON_BODY", "value": 'say "hi" back\\slash'}),
    (StasisEnd, A, {}),
    (StasisStart, B, {"args": ("0612345679",)}),
    (ChannelVarset, B, {"variable": "GATEKEEPER_RESULT", "value": "DENY"}),
    (ChannelHangupRequest, B, {"cause": 32, "soft": True}),
    (StasisEnd, B, {}),
    (StasisStart, C, {"args": ("0612345670",)}),
    (StasisEnd, C, {}),
    (StasisStart, E, {"args": ("0612345672",)}),
    (ChannelVarset, E, {"variable": "GATEKEEPER_RESULT", "value": "ALLOW"}),
    (StasisEnd, E, {}),
    (StasisStart, F, {"args": ("0612345673",)}),
    (ChannelHangupRequest, F, {"cause": 32, "soft": True}),
    (StasisEnd, F, {}),
    (ChannelVarset, F, {"variable": "STASISSTATUS", "value": "SUCCESS"}),
    (ChannelHangupRequest, F, {"cause": 16, "soft": True}),
    (ChannelDialplan, F, {"dialplan_app": "Verbose", "dialplan_app_data": H_EXTEN_DATA}),
    (ChannelDestroyed, F, {"cause": 21, "cause_txt": "Call Rejected"}),
    (StasisStart, G, {"args": ("0612345674",)}),
    (ChannelStateChange, G, {}),
    (ChannelHangupRequest, G, {"cause": 16, "soft": False}),
    (StasisEnd, G, {}),
    (StasisStart, D, {"args": ("0612345671",)}),
    (ChannelHangupRequest, D, {"cause": 32, "soft": True}),
    (StasisEnd, D, {}),
]


def test_the_trace_has_the_27_frames_of_the_readme(frames: list[str]) -> None:
    assert len(frames) == len(EXPECTED) == 27


@pytest.mark.parametrize(
    ("index", "expected"),
    list(enumerate(EXPECTED)),
    ids=[f"{i:02d}-{cls.__name__}" for i, (cls, _, _) in enumerate(EXPECTED)],
)
def test_every_trace_frame_parses_into_its_dataclass(
    frames: list[str], index: int, expected: tuple[type[Event], str, dict[str, object]]
) -> None:
    cls, channel_id, attributes = expected
    event = parse_event(frames[index])
    assert type(event) is cls
    assert event.type == cls.__name__
    assert event.asterisk_id == "02:fc:00:00:00:01"
    assert event.application == "gatekeeper"
    assert isinstance(event.timestamp, datetime)
    assert event.timestamp.utcoffset() is not None
    assert event.timestamp.utcoffset() == UTC.utcoffset(None)
    channel = getattr(event, "channel", None)
    assert isinstance(channel, Channel)
    assert channel.id == channel_id
    for name, value in attributes.items():
        assert getattr(event, name) == value, name


def test_stasis_start_carries_every_channel_field(frames: list[str]) -> None:
    moment = datetime(2026, 11, 28, 10, 2, 25, 454000, tzinfo=UTC)
    assert parse_event(frames[0]) == StasisStart(
        timestamp=moment,
        asterisk_id="02:fc:00:00:00:01",
        application="gatekeeper",
        args=("0612345678",),
        channel=Channel(
            id="1795860145.73",
            name="Local/0612345678@outbound-ari-00000024;2",
            state="Ring",
            caller=CallerId(name="", number=""),
            connected=CallerId(name="", number=""),
            accountcode="",
            dialplan=Dialplan(
                context="outbound-ari",
                exten="0612345678",
                priority=1,
                app_name="Stasis",
                app_data="gatekeeper,0612345678",
            ),
            creationtime=moment,
            language="en",
            protocol_id="",
        ),
    )


def test_channel_destroyed_reports_the_h_extension_position(frames: list[str]) -> None:
    event = parse_event(frames[19])
    assert isinstance(event, ChannelDestroyed)
    assert event.channel.dialplan == Dialplan("outbound-ari", "h", 2, "", "")


def test_dialplan_event_shows_the_h_extension_running(frames: list[str]) -> None:
    event = parse_event(frames[18])
    assert isinstance(event, ChannelDialplan)
    assert event.channel.dialplan == Dialplan("outbound-ari", "h", 1, "Verbose", H_EXTEN_DATA)


def test_state_change_after_answer_shows_up(frames: list[str]) -> None:
    event = parse_event(frames[21])
    assert isinstance(event, ChannelStateChange)
    assert event.channel.state == "Up"


def test_far_end_hangup_request_has_no_soft_key(frames: list[str]) -> None:
    assert "soft" not in _frame(frames, 22)
    event = parse_event(frames[22])
    assert isinstance(event, ChannelHangupRequest)
    assert (event.cause, event.soft) == (16, False)


def test_bytes_frames_parse_like_text(frames: list[str]) -> None:
    assert parse_event(frames[5].encode()) == parse_event(frames[5])


def test_events_are_frozen_and_hashable(frames: list[str]) -> None:
    event = parse_event(frames[0])
    assert isinstance(event, StasisStart)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.args = ()  # type: ignore[misc]
    assert hash(event) == hash(parse_event(frames[0]))
    assert not hasattr(event, "__dict__")


def test_unknown_event_types_are_kept_with_their_text(frames: list[str]) -> None:
    data = _frame(frames, 3)
    data["type"] = "ChannelDtmfReceived"
    text = json.dumps(data)
    event = parse_event(text)
    assert isinstance(event, UnknownEvent)
    assert (event.type, event.application, event.asterisk_id, event.raw) == (
        "ChannelDtmfReceived",
        "gatekeeper",
        "02:fc:00:00:00:01",
        text,
    )
    assert event.timestamp == datetime(2026, 11, 28, 10, 2, 26, 61000, tzinfo=UTC)


def test_unknown_message_without_envelope_is_accepted() -> None:
    event = parse_event('{"type":"MissingParams","params":["app"]}')
    assert isinstance(event, UnknownEvent)
    assert (event.type, event.timestamp, event.application, event.asterisk_id) == ("MissingParams", None, "", "")


def test_global_varset_has_no_channel(frames: list[str]) -> None:
    data = _frame(frames, 1)
    del data["channel"]
    event = parse_event(json.dumps(data))
    assert isinstance(event, ChannelVarset)
    assert event.channel is None


def test_channelvars_and_missing_protocol_id(frames: list[str]) -> None:
    data = _frame(frames, 0)
    channel = data["channel"]
    assert isinstance(channel, dict)
    del channel["protocol_id"]
    channel["channelvars"] = {"GATEKEEPER_CAMPAIGN": "acme"}
    event = parse_event(json.dumps(data))
    assert isinstance(event, StasisStart)
    assert event.channel.protocol_id == ""
    assert event.channel.channelvars == {"GATEKEEPER_CAMPAIGN": "acme"}


def test_asterisk_id_is_optional_as_in_the_ari_model(frames: list[str]) -> None:
    data = _frame(frames, 3)
    del data["asterisk_id"]
    event = parse_event(json.dumps(data))
    assert isinstance(event, StasisEnd)
    assert event.asterisk_id == ""


# -- malformed frames ----------------------------------------------------------------------------

_DELETE = object()


def _mutated(frames: list[str], index: int, path: str, value: object) -> str:
    data = copy.deepcopy(_frame(frames, index))
    *parents, last = path.split(".")
    node: object = data
    for key in parents:
        assert isinstance(node, dict)
        node = node[key]
    assert isinstance(node, dict)
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        '{"type": "StasisStart",',
        "[]",
        "null",
        '"StasisStart"',
        "{}",
        '{"type": 5}',
        '{"type": null}',
        "[" * 100_000 + "]" * 100_000,
        '{"type":"StasisEnd","cause":' + "1" * 5000 + "}",
    ],
    ids=[
        "empty",
        "garbage",
        "truncated",
        "array",
        "null",
        "string",
        "no-type",
        "int-type",
        "null-type",
        "deep",
        "huge-int",
    ],
)
def test_frames_that_are_not_event_objects_raise(text: str) -> None:
    with pytest.raises(AriEventError):
        parse_event(text)


def test_invalid_utf8_raises() -> None:
    with pytest.raises(AriEventError, match="UTF-8"):
        parse_event(b'{"type":"StasisEnd","x":"\xff"}')


@pytest.mark.parametrize(
    ("index", "path", "value", "field"),
    [
        (0, "channel", _DELETE, "channel"),
        (0, "channel", "1795860145.73", "channel"),
        (0, "channel.id", _DELETE, "channel.id"),
        (0, "channel.id", 1795860145.73, "channel.id"),
        (0, "channel.caller", _DELETE, "channel.caller"),
        (0, "channel.caller.number", None, "channel.caller.number"),
        (0, "channel.dialplan.priority", "1", "channel.dialplan.priority"),
        (0, "channel.dialplan.priority", True, "channel.dialplan.priority"),
        (0, "channel.creationtime", "yesterday", "channel.creationtime"),
        (0, "channel.creationtime", "2026-11-28T10:02:25.454", "channel.creationtime"),
        (0, "channel.channelvars", ["GATEKEEPER_CAMPAIGN"], "channel.channelvars"),
        (0, "args", _DELETE, "args"),
        (0, "args", "0612345678", "args"),
        (0, "args", ["0612345678", 5], "args[1]"),
        (0, "timestamp", _DELETE, "timestamp"),
        (0, "application", _DELETE, "application"),
        (0, "asterisk_id", 2, "asterisk_id"),
        (1, "value", None, "value"),
        (1, "variable", _DELETE, "variable"),
        (1, "channel", [], "channel"),
        (6, "cause", _DELETE, "cause"),
        (6, "cause", 32.0, "cause"),
        (6, "soft", "true", "soft"),
        (18, "dialplan_app_data", _DELETE, "dialplan_app_data"),
        (19, "cause_txt", _DELETE, "cause_txt"),
        (21, "channel.state", None, "channel.state"),
    ],
)
def test_missing_or_mistyped_fields_raise_naming_the_field(
    frames: list[str], index: int, path: str, value: object, field: str
) -> None:
    text = _mutated(frames, index, path, value)
    with pytest.raises(AriEventError) as caught:
        parse_event(text)
    assert caught.value.path == field
    assert caught.value.event_type == _frame(frames, index)["type"]
    assert field in str(caught.value)


# -- REST helpers: the exact requests of ari-rest.txt ------------------------------------------------


def test_set_variable_builds_the_traced_request() -> None:
    request = rest.set_variable("1795860145.73", "GATEKEEPER_RESULT", "ALLOW via ari")
    assert request.method is rest.Method.POST
    assert request.target == "/ari/channels/1795860145.73/variable?variable=GATEKEEPER_RESULT&value=ALLOW%20via%20ari"


def test_set_variable_encodes_every_reserved_character() -> None:
    value = 'a+b&c=d/e?f#g%h "i" \\j;k é'
    request = rest.set_variable("id with/slash", "GK VAR", value)
    assert request.path == "/ari/channels/id%20with%2Fslash/variable"
    assert "+" not in request.query
    assert " " not in request.query
    assert dict(parse_qsl(request.query, strict_parsing=True)) == {"variable": "GK VAR", "value": value}
    assert unquote(request.path.split("/")[3]) == "id with/slash"


def test_get_variable_and_get_channel() -> None:
    assert rest.get_variable("1795860145.73", "GATEKEEPER_CAMPAIGN") == rest.AriRequest(
        rest.Method.GET, "/ari/channels/1795860145.73/variable", "variable=GATEKEEPER_CAMPAIGN"
    )
    assert rest.get_channel("1795860145.73").target == "/ari/channels/1795860145.73"


def test_continue_with_and_without_a_target() -> None:
    assert rest.continue_in_dialplan("1795860152.79").target == "/ari/channels/1795860152.79/continue"
    request = rest.continue_in_dialplan("1795860145.73", context="after-ari", extension="0612345678", priority=1)
    assert request.method is rest.Method.POST
    assert request.target == "/ari/channels/1795860145.73/continue?context=after-ari&extension=0612345678&priority=1"


def test_hangup_defaults_to_cause_21() -> None:
    request = rest.hangup("1795860148.75")
    assert request.method is rest.Method.DELETE
    assert request.target == "/ari/channels/1795860148.75?reason_code=21"
    assert rest.hangup("1795860158.85", reason_code=16).target == "/ari/channels/1795860158.85?reason_code=16"


def test_subscription_and_application() -> None:
    request = rest.subscribe_channel("gatekeeper", "1795860153.81")
    assert request.method is rest.Method.POST
    assert request.target == "/ari/applications/gatekeeper/subscription?eventSource=channel:1795860153.81"
    assert rest.get_application("gatekeeper").target == "/ari/applications/gatekeeper"


def test_events_url_uses_no_api_key() -> None:
    assert rest.events_path("gatekeeper") == "/ari/events?app=gatekeeper&subscribeAll=false"
    assert (
        rest.events_url("http://127.0.0.1:8088/", "gatekeeper")
        == "ws://127.0.0.1:8088/ari/events?app=gatekeeper&subscribeAll=false"
    )
    assert rest.events_url("https://pbx:8089/asterisk", "gk app", subscribe_all=True) == (
        "wss://pbx:8089/asterisk/ari/events?app=gk%20app&subscribeAll=true"
    )
    assert "api_key" not in rest.events_url("http://127.0.0.1:8088", "gatekeeper")


def test_basic_authorization_matches_the_trace() -> None:
    assert rest.basic_authorization("gk", "gkpass") == "Basic Z2s6Z2twYXNz"


@pytest.mark.parametrize(
    "build",
    [
        lambda: rest.set_variable("", "X", "Y"),
        lambda: rest.set_variable("1.2", "", "Y"),
        lambda: rest.get_variable("1.2", ""),
        lambda: rest.continue_in_dialplan("1.2", priority=0),
        lambda: rest.hangup("1.2", reason_code=-1),
        lambda: rest.events_path(""),
        lambda: rest.events_url("ftp://pbx", "gatekeeper"),
        lambda: rest.events_url("pbx:8088", "gatekeeper"),
        lambda: rest.basic_authorization("g:k", "x"),
    ],
)
def test_invalid_arguments_are_refused(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize(
    ("status", "body", "reason", "message"),
    [
        (404, b'{"message":"Channel not found"}', "Not Found", "Channel not found"),
        (404, '{"message":"Provided variable was not found"}', "Variable Not Found", "Provided variable was not found"),
        (
            400,
            b'{"message":"The reason and reason_code can\'t both be specified"}',
            "Bad Request",
            "The reason and reason_code can't both be specified",
        ),
        (401, b'{"message":"Authentication required"}', "Unauthorized", "Authentication required"),
        (502, b"<html>\n<body>Bad   Gateway</body></html>", "Bad Gateway", "<html> <body>Bad Gateway</body></html>"),
        (500, b"", "Internal Server Error", "Internal Server Error"),
        (500, b"", "", "HTTP 500"),
        (500, b'{"error": "x"}', "", '{"error": "x"}'),
        (500, b"\xff\xfe", "", "\ufffd\ufffd"),
    ],
)
def test_error_bodies_become_typed_errors(status: int, body: str | bytes, reason: str, message: str) -> None:
    error = rest.parse_error(status, body, reason=reason)
    assert isinstance(error, rest.AriHttpError)
    assert (error.status, error.message, error.reason) == (status, message, reason)
    assert error.not_found is (status == 404)
    assert str(status) in str(error)


def test_variable_value_is_read_from_the_traced_body() -> None:
    assert rest.parse_variable_value(b'{"value":"say \\"hi\\" back\\\\slash"}') == 'say "hi" back\\slash'
    for bad in (b"", b"[]", b'{"value": 1}', b"{"):
        with pytest.raises(rest.AriBodyError):
            rest.parse_variable_value(bad)
