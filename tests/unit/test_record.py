"""The decision record's pieces: text every store accepts, decision ids, the payload that never fails."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from gatekeeper.gate import CallRequest
from gatekeeper.index import codec
from gatekeeper.index.store import reply_code
from gatekeeper.record import DecisionRecord, new_decision_id, representable
from tests.conftest import make_record

CROCKFORD = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("acme-sales", "acme-sales"),
        ("zoë", "zoë"),
        ("a\x00b", "a\\x00b"),
        (b"camp\xff".decode("utf-8", "surrogateescape"), "camp\\xff"),  # a raw byte from FastAGI
        ("\ud800x", "x".join(["\\ud800", ""])),  # an unpaired surrogate from JSON's "\ud800"
        ("\udfff\ud800", "\\udfff\\ud800"),
    ],
)
def test_representable_text_shows_what_arrived(text: str, shown: str) -> None:
    assert representable(text) == shown
    shown.encode("utf-8")  # encodable: JSON, Redis, the spool and PostgreSQL take it


@given(st.text(alphabet=st.characters(codec=None, exclude_categories=())))
def test_representable_text_is_valid_utf8_without_nul(text: str) -> None:
    clean = representable(text)
    assert "\x00" not in clean
    clean.encode("utf-8")
    if text.isascii() and "\x00" not in text:
        assert clean is text  # the common case costs nothing


def test_a_call_request_is_made_representable_on_construction() -> None:
    raw = b"1795860072.69\xff".decode("utf-8", "surrogateescape")
    request = CallRequest("0612345678\x00", "acme\udcff", "+31\ud800", uniqueid=raw, linkedid="ok")
    assert (request.dialled, request.campaign, request.caller_id) == ("0612345678\\x00", "acme\\xff", "+31\\ud800")
    assert (request.uniqueid, request.linkedid) == ("1795860072.69\\xff", "ok")


def old_decision_id(ms: int, random: bytes) -> str:
    """The layout decision ids always had: base32 of 6 bytes of milliseconds and 10 random bytes, in
    Crockford's alphabet, without the padding."""
    alphabet = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    return base64.b32encode(ms.to_bytes(6) + random)[:26].translate(alphabet).decode()


def test_decision_ids_keep_their_layout_and_sort_by_time() -> None:
    first, later = new_decision_id(1_785_000_000.000), new_decision_id(1_785_000_000.002)
    assert CROCKFORD.fullmatch(first) and CROCKFORD.fullmatch(later)
    assert first < later and len({new_decision_id(1.0) for _ in range(1000)}) == 1000
    ms = 1_785_000_000_000
    assert first[:9] == old_decision_id(ms, bytes(10))[:9]  # the time part (45 of its 48 bits), as before
    for value in (0, 1, (1 << 80) - 1, 0x123456789ABCDEF01234):
        digits = ((ms << 80) | value) << 2
        ours = "".join("0123456789ABCDEFGHJKMNPQRSTVWXYZ"[(digits >> s) & 31] for s in range(125, -1, -5))
        assert ours == old_decision_id(ms, value.to_bytes(10))


def test_the_payload_never_fails_and_keeps_every_field() -> None:
    record = make_record(campaign="bad\udcff", uniqueid="nul\x00")  # past the boundary by mistake
    data = json.loads(record.payload())
    assert (data["campaign"], data["uniqueid"]) == ("bad\\xff", "nul\\x00")
    good = make_record(explanation="geen toestemming — “quoted”")
    assert DecisionRecord.loads(good.payload()) == good


@pytest.mark.parametrize(
    ("start", "end", "reference", "field"),
    [
        (dt.date(2025, 1, 1), dt.datetime(2025, 1, 2), "", "end"),  # a date-time without a time zone
        (dt.datetime(2025, 1, 1), None, "", "start"),
        (dt.date(2025, 1, 1), None, "x" * 1000, "reference"),
    ],
)
def test_an_unencodable_fact_names_its_field(
    start: dt.date, end: dt.datetime | None, reference: str, field: str
) -> None:
    with pytest.raises(codec.EncodingError) as raised:
        codec.entry(codec.Kind.CONSENT, start, end, reference)
    assert raised.value.field == field


def test_redis_error_replies_are_told_apart_by_their_code() -> None:
    assert reply_code(ResponseError("STALE generation 7")) == "STALE"
    assert reply_code(ResponseError("BUSYGROUP Consumer Group name already exists")) == "BUSYGROUP"
    assert reply_code(ResponseError("ERR the message mentions STALE")) == "ERR"
